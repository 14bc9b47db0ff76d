// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Escrow (warroom sandbox and test contract)
/// @notice A deliberately small escrow used by warroom's sandbox and tests. It holds
///         deposits per order, lets the owner or an arbiter release them (emitting
///         EscrowReleased, the event the Meta Aggregator listener consumes), and has an
///         OpenZeppelin-style pause switch. Release does not do real fund accounting:
///         it records the released amount and never reverts for a fresh order id.
contract Escrow {
    address private _owner;
    bool private _paused;

    mapping(address => bool) public arbiters;
    mapping(bytes32 => uint256) public deposits;
    mapping(bytes32 => uint256) public released;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event Paused(address account);
    event Unpaused(address account);
    event ArbiterSet(address indexed arbiter, bool allowed);
    event EscrowDeposited(bytes32 indexed orderId, address indexed from, uint256 amount);
    event EscrowReleased(bytes32 indexed orderId, uint256 amount);

    error NotOwner(address caller);
    error NotArbiter(address caller);
    error EnforcedPause();
    error ExpectedPause();
    error ZeroAddress();

    modifier onlyOwner() {
        if (msg.sender != _owner) revert NotOwner(msg.sender);
        _;
    }

    modifier onlyArbiter() {
        if (msg.sender != _owner && !arbiters[msg.sender]) revert NotArbiter(msg.sender);
        _;
    }

    modifier whenNotPaused() {
        if (_paused) revert EnforcedPause();
        _;
    }

    modifier whenPaused() {
        if (!_paused) revert ExpectedPause();
        _;
    }

    constructor() {
        _owner = msg.sender;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    function owner() external view returns (address) {
        return _owner;
    }

    function paused() external view returns (bool) {
        return _paused;
    }

    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(_owner, newOwner);
        _owner = newOwner;
    }

    function setArbiter(address arbiter, bool allowed) external onlyOwner {
        arbiters[arbiter] = allowed;
        emit ArbiterSet(arbiter, allowed);
    }

    function pause() external onlyOwner whenNotPaused {
        _paused = true;
        emit Paused(msg.sender);
    }

    function unpause() external onlyOwner whenPaused {
        _paused = false;
        emit Unpaused(msg.sender);
    }

    function deposit(bytes32 orderId) external payable whenNotPaused {
        deposits[orderId] += msg.value;
        emit EscrowDeposited(orderId, msg.sender, msg.value);
    }

    function release(bytes32 orderId, uint256 amount) external onlyArbiter whenNotPaused {
        released[orderId] += amount;
        emit EscrowReleased(orderId, amount);
    }

    /// @notice Emit EscrowReleased without touching state (listener/event-path tests).
    function testEmitEvent(bytes32 orderId, uint256 amount) external onlyArbiter {
        emit EscrowReleased(orderId, amount);
    }
}
