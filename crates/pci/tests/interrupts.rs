//! MSI-X vector routing, the ISR and the INTx line (`MsixInterrupts` as the core's
//! `Interrupts`), and DEVICE_NEEDS_RESET's configuration change notification (seed 002).

use virtio_lm_pci::testing::*;
use virtio_lm_pci::{PciError, QueueSetup};
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::pci::offset::*;
use virtio_lm_spec::pci::{VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_ISR_CONFIG, VIRTIO_PCI_ISR_QUEUE};
use virtio_lm_spec::{DeviceStatus, Feature};

/// Queue 0 routed to vector 1 and configuration changes to vector 0: a used buffer fires
/// vector 1 (its eventfd becomes readable), a configuration change fires vector 0; neither
/// touches the ISR or INTx.
#[test]
fn msix_vectors_route_queue_and_config_notifications() {
    let (_, f, mut driver) = running(features(&[Feature::Version1]), 4, false);
    let irq = f.interrupts();
    assert_eq!((irq.config_vector(), irq.queue_vector(0)), (0, 1));
    driver.submit(0, &[BufferSpec::writable(DATA, 8)]).unwrap();
    assert_eq!((irq.vector_count(0), irq.vector_count(1)), (0, 1));
    assert_eq!(irq.vector_eventfd(1).unwrap().read().unwrap(), 1);
    f.core().lock().unwrap().change_config(|_| {});
    assert_eq!((irq.vector_count(0), irq.vector_count(1)), (1, 1));
    assert_eq!(irq.vector_eventfd(0).unwrap().read().unwrap(), 1);
    assert_eq!((irq.intx_count(), irq.isr()), (0, 0));
    assert_eq!(driver.read_isr(), 0);
    assert_eq!(irq.used_notifications(), 1);
    assert_eq!(irq.config_notifications(), 1);
    assert_eq!(irq.total(), 2);
}

/// With VIRTIO_MSI_NO_VECTOR a notification sets its ISR bit (bit 0 queue, bit 1
/// configuration) and raises INTx; a read of the ISR returns the bits and clears them.
#[test]
fn no_vector_sets_isr_and_isr_read_clears() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let mut driver = driver_for(&f, &mem);
    driver.set_config_vector(VIRTIO_MSI_NO_VECTOR);
    driver
        .init(
            features(&[Feature::Version1]),
            &[QueueSetup::new(0, 4, RING).with_vector(VIRTIO_MSI_NO_VECTOR)],
        )
        .unwrap();
    let irq = f.interrupts();
    driver.submit(0, &[BufferSpec::writable(DATA, 8)]).unwrap();
    assert_eq!(irq.intx_count(), 1);
    assert_eq!(irq.intx_eventfd().read().unwrap(), 1);
    assert_eq!(driver.read_isr(), VIRTIO_PCI_ISR_QUEUE);
    assert_eq!(driver.read_isr(), 0);
    f.core().lock().unwrap().change_config(|_| {});
    assert_eq!(driver.read_isr(), VIRTIO_PCI_ISR_CONFIG);
    driver.submit(0, &[BufferSpec::writable(DATA, 8)]).unwrap();
    f.core().lock().unwrap().change_config(|_| {});
    // A wide read returns the ISR in its first byte and clears it too.
    let mut wide = [0xffu8; 4];
    f.bar_read(driver.regions().isr.offset, &mut wide);
    assert_eq!(
        wide,
        [VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG, 0, 0, 0]
    );
    assert_eq!(driver.read_isr(), 0);
    assert_eq!(irq.intx_count(), 4);
    assert_eq!((0..4).map(|v| irq.vector_count(v)).sum::<u64>(), 0);
}

/// A vector the function does not have reads back as VIRTIO_MSI_NO_VECTOR (the device refuses
/// it), and the driver reports the refusal.
#[test]
fn out_of_range_vectors_are_refused() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    f.w16(CONFIG_MSIX_VECTOR, 4);
    assert_eq!(f.r16(CONFIG_MSIX_VECTOR), VIRTIO_MSI_NO_VECTOR);
    f.w16(CONFIG_MSIX_VECTOR, 3);
    assert_eq!(f.r16(CONFIG_MSIX_VECTOR), 3);
    let mut driver = driver_for(&f, &mem);
    let err = driver
        .init(
            features(&[Feature::Version1]),
            &[QueueSetup::new(0, 4, RING).with_vector(9)],
        )
        .unwrap_err();
    assert!(
        matches!(err, PciError::VectorRefused { vector: 9 }),
        "{err}"
    );
}

/// Seed 002: "After it sets DEVICE_NEEDS_RESET, the device MUST send a device configuration
/// change notification to the driver." (as amended by seed 000: "If DRIVER_OK is set, after
/// it sets DEVICE_NEEDS_RESET, the device MUST send a device configuration change notification
/// to the driver.") A chain pointing outside guest memory makes the device set NEEDS_RESET; the
/// notification arrives on the configuration vector, and the device processes nothing more.
#[test]
fn needs_reset_sends_a_config_change_notification() {
    let (mem, f, mut driver) = running(features(&[Feature::Version1]), 4, false);
    driver
        .submit(0, &[BufferSpec::writable(0xffff_0000, 8)])
        .unwrap();
    assert!(driver.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    let irq = f.interrupts();
    assert_eq!(irq.vector_count(0), 1);
    assert_eq!(irq.config_notifications(), 1);
    driver
        .add_buffer(0, &[BufferSpec::writable(DATA, 8)])
        .unwrap();
    driver.publish(0).unwrap();
    let before = snapshot(&mem);
    driver.notify(0).unwrap();
    assert!(
        snapshot(&mem) == before,
        "guest memory changed after NEEDS_RESET"
    );
    assert_eq!(irq.vector_count(1), 0);
}
