"""The sandbox's own services: small Python programs run as child processes.

Each one reads `stack.json` from the run directory given with `--run-dir`, writes its
pid to `<run-dir>/pids/<name>.pid`, logs plain lines (timestamp, level, message) to
stdout (the stack points stdout at `<run-dir>/logs/<name>.log`) and exits on SIGTERM.
"""
