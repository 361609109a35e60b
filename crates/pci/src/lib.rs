//! virtio-pci transport for virtio-lm (in progress).
