//! A function's own registers, which virtio 1.4's device parts leave to the hypervisor
//! (spec-decisions §37): the select registers, the ISR status, MSI-X messages raised and not
//! taken, the INTx line and the PCI_CFG window, read without disturbing them and set on another
//! function; what does not fit the function is refused and changes nothing.

use virtio_lm_pci::testing::*;
use virtio_lm_pci::{FunctionRegisters, PciTransport};
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::pci::offset::*;
use virtio_lm_spec::Feature;

/// spec-decisions §37: a used buffer's message on vector 1 that the guest has not taken is
/// pending; reading the registers leaves it pending; set on a fresh function it is raised there
/// (its eventfd readable) without counting a delivery, and the selects and ISR read back as
/// they were.
#[test]
fn registers_move_pending_messages_isr_and_selects() {
    let (_, source, mut driver) = running(features(&[Feature::Version1]), 8, false);
    driver.submit(0, &[BufferSpec::writable(DATA, 8)]).unwrap();
    source.w32(DEVICE_FEATURE_SELECT, 1);
    source.w32(DRIVER_FEATURE_SELECT, 1);
    source.w16(QUEUE_SELECT, 0);
    let regs = source.registers();
    assert_eq!(regs.msix_pending, vec![1], "{regs:?}");
    assert!(!regs.intx_pending);
    assert_eq!(
        (
            regs.device_feature_select,
            regs.driver_feature_select,
            regs.queue_select
        ),
        (1, 1, 0)
    );
    assert_eq!(source.registers(), regs, "looking takes nothing");
    let irq = source.interrupts();
    assert_eq!(irq.vector_eventfd(1).unwrap().read().unwrap(), 1);

    let mem = memory();
    let destination = counting_function(&mem, 8, false);
    let moved = FunctionRegisters {
        isr: 1,
        intx_pending: true,
        ..regs.clone()
    };
    destination.restore_registers(&moved).unwrap();
    let irq = destination.interrupts();
    assert_eq!(irq.vector_eventfd(1).unwrap().read().unwrap(), 1);
    assert_eq!(irq.intx_eventfd().read().unwrap(), 1);
    assert_eq!(irq.total(), 0, "a moved message is not a new delivery");
    assert_eq!(destination.r32(DEVICE_FEATURE_SELECT), 1);
    assert_eq!(destination.r16(QUEUE_SELECT), 0);
    let mut isr = [0u8];
    destination.read(0x1000, &mut isr);
    assert_eq!(
        isr,
        [1],
        "the ISR reads as on the source, and the read clears it"
    );
    assert_eq!(irq.isr(), 0);
}

/// spec-decisions §37: registers that do not fit the function (a vector it lacks, vectors out
/// of order, undefined ISR bits, a PCI_CFG window it has not) are refused and change nothing.
#[test]
fn registers_that_do_not_fit_are_refused_and_change_nothing() {
    let mem = memory();
    let function = counting_function(&mem, 8, false);
    let before = function.registers();
    let bad = [
        FunctionRegisters {
            msix_pending: vec![0, 7],
            ..FunctionRegisters::default()
        },
        FunctionRegisters {
            msix_pending: vec![1, 0],
            ..FunctionRegisters::default()
        },
        FunctionRegisters {
            isr: 4,
            ..FunctionRegisters::default()
        },
        FunctionRegisters {
            pci_cfg_window: Some((0, 0, 4)),
            ..FunctionRegisters::default()
        },
        FunctionRegisters {
            queue_select: 3,
            isr: 0x80,
            ..FunctionRegisters::default()
        },
    ];
    for regs in bad {
        assert!(function.check_registers(&regs).is_err(), "{regs:?}");
        assert!(function.restore_registers(&regs).is_err(), "{regs:?}");
        assert_eq!(function.registers(), before, "{regs:?} changed something");
        assert_eq!(
            function.interrupts().vector_eventfd(0).unwrap().read().ok(),
            None
        );
    }
}

/// spec-decisions §37: a function with the PCI_CFG window moves what the driver programmed
/// into it.
#[test]
fn the_pci_cfg_window_moves() {
    let mem = memory();
    let with_window = |mem| {
        let f = counting_function(mem, 8, false);
        std::sync::Arc::try_unwrap(f)
            .ok()
            .unwrap()
            .with_pci_cfg_window()
    };
    let source = with_window(&mem);
    let at = source.pci_cfg_offset().unwrap();
    source.config_write(at + 4, &[0]);
    source.config_write(at + 8, &0x14u32.to_le_bytes());
    source.config_write(at + 12, &4u32.to_le_bytes());
    let regs = source.registers();
    assert_eq!(regs.pci_cfg_window, Some((0, 0x14, 4)));
    let destination = with_window(&mem);
    destination.restore_registers(&regs).unwrap();
    assert_eq!(destination.registers().pci_cfg_window, Some((0, 0x14, 4)));
    let mut length = [0u8; 4];
    destination.config_read(at + 12, &mut length);
    assert_eq!(u32::from_le_bytes(length), 4);
}
