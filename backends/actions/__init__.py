"""Actions: the guard -> plan -> confirm -> execute -> audit contract, commands, escalation."""
