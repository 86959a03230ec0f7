//! End-to-end tests of virtio-vsock.
