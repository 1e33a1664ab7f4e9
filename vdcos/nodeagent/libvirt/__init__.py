"""The libvirt/QEMU hypervisor driver and its domain XML."""
