#!/bin/busybox sh
# /init of the end-to-end test guest (built by ./build). Loads the virtio modules, waits for
# /dev/vda and runs the verifying disk workload; every result line starts with VLM- on ttyS0.
#
# Workload: SLOTS slots of 512 KiB at the start of the disk. Each round
#   1. re-verifies every slot from the page cache (no device I/O: pages the backend wrote by
#      DMA in an earlier round — after a migration, they are only right if the backend logged
#      those writes as dirty),
#   2. writes one slot with new random data (O_DIRECT),
#   3. drops the page cache and re-reads every slot (buffered: the backend writes the data
#      into fresh page-cache pages) and verifies it,
#   4. prints VLM-ROUND n.
# Mode boot (kernel argument vlm.mode=boot) stops after 3 rounds; mode loop stops when the
# host writes VLMSTOP into the control block (4 KiB block 4096, read with O_DIRECT each round).
# Then VLM-DONE <md5 of all slots> and power off. Any mismatch prints VLM-FAIL and powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
    insmod /lib/modules/$m.ko || echo "VLM-FAIL insmod $m"
done
mode=$(sed -n 's/.*vlm\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
SLOTS=8
SLOT_BLOCKS=128
CTRL=4096
fail() {
    echo "VLM-FAIL $*"
    poweroff -f
}
n=0
while [ ! -b /dev/vda ]; do
    n=$((n + 1))
    [ $n -gt 600 ] && fail "no /dev/vda"
    sleep 0.1
done
# Keeps the block device's page cache alive between the dd runs.
exec 3</dev/vda
echo "VLM-START mode=$mode queues=$(ls /sys/block/vda/mq | wc -l)"
write_slot() {
    dd if=/dev/urandom of=/tmp/data bs=4096 count=$SLOT_BLOCKS 2>/dev/null
    md5sum </tmp/data | cut -d' ' -f1 >/tmp/sum.$1
    dd if=/tmp/data of=/dev/vda bs=4096 seek=$(($1 * SLOT_BLOCKS)) count=$SLOT_BLOCKS \
        oflag=direct conv=notrunc 2>/dev/null || fail "write slot $1"
}
verify_slots() {
    s=0
    while [ $s -lt $SLOTS ]; do
        got=$(dd if=/dev/vda bs=4096 skip=$((s * SLOT_BLOCKS)) count=$SLOT_BLOCKS 2>/dev/null | md5sum | cut -d' ' -f1)
        [ "$got" = "$(cat /tmp/sum.$s)" ] || fail "$1 round $2 slot $s"
        s=$((s + 1))
    done
}
s=0
while [ $s -lt $SLOTS ]; do
    write_slot $s
    s=$((s + 1))
done
verify_slots device 0
r=1
while :; do
    verify_slots page-cache $r
    write_slot $((r % SLOTS))
    sync
    echo 3 >/proc/sys/vm/drop_caches
    verify_slots device $r
    echo "VLM-ROUND $r"
    if [ "$mode" = boot ]; then
        [ $r -ge 3 ] && break
    else
        ctl=$(dd if=/dev/vda bs=4096 skip=$CTRL count=1 iflag=direct 2>/dev/null | head -c 7)
        [ "$ctl" = VLMSTOP ] && break
    fi
    r=$((r + 1))
done
verify_slots page-cache final
echo "VLM-DONE $(dd if=/dev/vda bs=4096 count=$((SLOTS * SLOT_BLOCKS)) 2>/dev/null | md5sum | cut -d' ' -f1)"
poweroff -f
