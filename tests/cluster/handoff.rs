//! Graceful scale-down: SIGTERM to an owner moves its queues after draining them.
