//! Two hosts (issue 13, "Two hosts"): two network namespaces joined by a veth pair stand in for
//! two machines. Host A runs `net-echo` and the source `vm`; host B the destination
//! `vm --incoming`; the blk image is shared through the file system, the control sockets
//! (Unix sockets: file-system names, not network ones) are reached from here. `virtio-lm
//! migrate --max-bandwidth` moves the guest from A to B across the veth while its net workload
//! talks to net-echo, which then answers the guest at B.
//!
//! Asserted: the migration completes; on B the net device announced itself (virtio 1.4
//! 5.1.6.5.4: VIRTIO_NET_S_ANNOUNCE and the configuration change, which the guest's driver
//! saw and acknowledged with VIRTIO_NET_CTRL_ANNOUNCE_ACK, counted in B's status as
//! `announce_acks`; docs/spec-decisions.md §31); net-echo learned B's address and the guest's
//! echoes keep verifying on B; B's verification shows 0 lost, 0 duplicated, 0 corrupted. The
//! namespaces are removed whatever happens (a drop guard).

use std::process::Command;

use serde_json::{json, Value};

mod common;
use common::control::{blk, Control};
use common::{binary, disk_image, json_output, temp_path, vm_args, Proc};

/// Host A's and host B's addresses on the veth.
const HOST_A: &str = "10.213.0.1";
const HOST_B: &str = "10.213.0.2";

/// Runs `ip` with `args`; panics with its output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth pair, each with its end up and addressed and its
/// loopback up; deleted (with the veth) on drop.
struct Hosts {
    a: String,
    b: String,
}

impl Hosts {
    fn new() -> Self {
        let tag = temp_path("ns");
        let tag = tag.file_name().unwrap().to_str().unwrap();
        // The guard exists before the first namespace, so a failure half-way cleans up too.
        let hosts = Hosts {
            a: format!("{tag}-a"),
            b: format!("{tag}-b"),
        };
        ip(&["netns", "add", &hosts.a]);
        ip(&["netns", "add", &hosts.b]);
        ip(&[
            "-n", &hosts.a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            "netns", &hosts.b,
        ]);
        for (ns, dev, addr) in [(&hosts.a, "veth0", HOST_A), (&hosts.b, "veth1", HOST_B)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn net_verified(status: &Value) -> u64 {
    status["guest"]["net_verified"].as_u64().unwrap()
}

/// Issue 13, "Two hosts", and virtio 1.4 5.1.6.5.4 (the announcement): see the module
/// documentation.
#[test]
fn migrate_between_two_network_namespaces_and_announce() {
    let dir = temp_path("two-hosts");
    std::fs::create_dir_all(&dir).unwrap();
    let hosts = Hosts::new();
    let image = disk_image(&dir);
    let echo = Proc::spawn_in(
        &hosts.a,
        &["net-echo", "--listen", &format!("{HOST_A}:0")],
        &dir.join("echo.log"),
    );
    let echo_addr = echo.wait_line("net-echo: listening on ");
    let vm = |ns: &str, local: &str, control: &std::path::Path, extra: &[&str], log: &str| {
        let net = format!("{local}:0,{echo_addr}");
        Proc::spawn_in(ns, &vm_args(control, &image, &net, extra), &dir.join(log))
    };
    let (src_sock, dst_sock) = (dir.join("src.sock"), dir.join("dst.sock"));
    let incoming = format!("tcp:{HOST_B}:0");
    let dst = vm(
        &hosts.b,
        HOST_B,
        &dst_sock,
        &["--incoming", &incoming],
        "dst.log",
    );
    let to = dst.wait_line("vm: incoming on ");
    let src = vm(&hosts.a, HOST_A, &src_sock, &[], "src.log");
    src.wait_line("vm: control socket ");
    let mut control = Control::connect(&src_sock);
    control.wait("the guest to run", |s| blk(s) > 0 && net_verified(s) > 0);
    assert_eq!(control.status()["guest"]["announce_acks"], json!(0));
    let source_peer = echo.wait_line("net-echo: peer is now ");
    assert!(source_peer.starts_with(HOST_A), "{source_peer}");

    let out = binary()
        .args(["migrate", "--control", src_sock.to_str().unwrap()])
        .args(["--to", &to, "--max-bandwidth", "64", "--json"])
        // A loaded machine may not converge in time: switching over anyway is what counts.
        .args(["--timeout", "20", "--force"])
        .output()
        .unwrap();
    let report = json_output(out, "migrate");
    assert_eq!(report["result"], json!("ok"), "{report:#}");
    assert_eq!(control.status()["state"], "completed");

    // The announcement: the driver's ack counted on B (the device accepts it only while
    // VIRTIO_NET_S_ANNOUNCE is set, which only the configuration change showed the driver).
    let mut dst_control = Control::connect(&dst_sock);
    let running = dst_control.wait("the destination to run and announce", |s| {
        s["state"] == "running" && s["guest"]["announce_acks"] == json!(1)
    });
    // net-echo follows the guest to host B, and the guest's echoes verify there.
    let new_peer = echo.wait_line("net-echo: peer is now ");
    assert!(new_peer.starts_with(HOST_B), "{new_peer}");
    let at_commit = net_verified(&running);
    dst_control.wait("echoes verified on host B", |s| {
        net_verified(s) > at_commit + 50
    });
    dst_control.quit_verified();
    control.execute(json!({"execute": "quit"}));
    drop((src, dst, echo));
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}
