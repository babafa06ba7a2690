//! The validator against real serde_json: Rust types shaped like Firecracker's
//! (`deny_unknown_fields`, same field order, widths and defaults) must refuse
//! the same bodies with the same message and position.

use banger_fc_double::schema::{Contract, Shape};
use banger_fc_double::validate::{is_mac, validate};
use serde::{Deserialize, Deserializer};

#[allow(dead_code)]
#[derive(Deserialize)]
enum StaticCpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    None,
}

#[allow(dead_code)]
#[derive(Deserialize, Default)]
enum HugePageConfig {
    #[default]
    None,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineConfig {
    vcpu_count: u8,
    mem_size_mib: usize,
    #[serde(default)]
    smt: bool,
    #[serde(default)]
    cpu_template: Option<StaticCpuTemplate>,
    #[serde(default)]
    track_dirty_pages: bool,
    #[serde(default)]
    huge_pages: HugePageConfig,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BootSourceConfig {
    kernel_image_path: String,
    initrd_path: Option<String>,
    boot_args: Option<String>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
enum ActionType {
    FlushMetrics,
    InstanceStart,
    SendCtrlAltDel,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action_type: ActionType,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VsockDeviceConfig {
    vsock_id: Option<String>,
    guest_cid: u32,
    uds_path: String,
}

struct MacAddr;

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if is_mac(&s) {
            Ok(MacAddr)
        } else {
            Err(serde::de::Error::custom(
                "The provided MAC address is invalid.",
            ))
        }
    }
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkInterfaceConfig {
    iface_id: String,
    host_dev_name: String,
    guest_mac: Option<MacAddr>,
    rx_rate_limiter: Option<serde::de::IgnoredAny>,
    tx_rate_limiter: Option<serde::de::IgnoredAny>,
    mtu: Option<u16>,
}

fn serde_says<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(body)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Every truncation, single-byte deletion and a few single-byte
/// substitutions of `valid`.
fn mutations(valid: &str) -> Vec<Vec<u8>> {
    let b = valid.as_bytes();
    let mut out = vec![b.to_vec()];
    for i in 0..b.len() {
        out.push(b[..i].to_vec());
        let mut del = b.to_vec();
        del.remove(i);
        out.push(del);
        for c in [
            b'"', b'1', b'}', b',', b'x', b' ', b':', b'-', b'\n', b't', b'0', b'.', b'e', b'\\',
            b'n', b'\0', b'[', b'{',
        ] {
            let mut sub = b.to_vec();
            sub[i] = c;
            out.push(sub);
        }
    }
    out
}

fn compare<T: for<'de> Deserialize<'de>>(def: &str, valid: &[&str]) -> usize {
    let c = Contract::vendored().unwrap();
    let shape = Shape::Struct(def.to_string());
    let mut n = 0;
    for v in valid {
        assert_eq!(
            validate(&c, &shape, v.as_bytes()).map_err(|e| e.to_string()),
            Ok(()),
            "{v}"
        );
        for body in mutations(v) {
            // Documented divergence: serde would also take a struct as a JSON
            // array of its fields; the yaml (and the double) only objects.
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                continue;
            }
            let ours = validate(&c, &shape, &body).map_err(|e| e.to_string());
            let theirs = serde_says::<T>(&body);
            assert_eq!(
                ours,
                theirs,
                "{def} body {:?}",
                String::from_utf8_lossy(&body)
            );
            n += 1;
        }
    }
    n
}

#[test]
fn machine_config_matches_serde_json() {
    let n = compare::<MachineConfig>(
        "MachineConfiguration",
        &[
            r#"{"vcpu_count": 2, "mem_size_mib": 1024, "smt": false, "huge_pages": "2M"}"#,
            r#"{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"T2","track_dirty_pages":true}"#,
            "{\n  \"mem_size_mib\": 128,\n  \"vcpu_count\": 1\n}\n",
        ],
    );
    assert!(n > 1000);
}

#[test]
fn boot_source_and_vsock_match_serde_json() {
    compare::<BootSourceConfig>(
        "BootSource",
        &[r#"{"kernel_image_path": "/k", "boot_args": "a b", "initrd_path": null}"#],
    );
    compare::<VsockDeviceConfig>(
        "Vsock",
        &[r#"{"guest_cid": 3, "uds_path": "/v.sock", "vsock_id": "v"}"#],
    );
}

#[test]
fn actions_and_nics_match_serde_json() {
    compare::<ActionBody>(
        "InstanceActionInfo",
        &[
            r#"{"action_type": "InstanceStart"}"#,
            r#"{"action_type": {"SendCtrlAltDel": null}}"#,
        ],
    );
    compare::<NetworkInterfaceConfig>(
        "NetworkInterface",
        &[r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}"#],
    );
}

#[test]
fn float_texts_match_serde_json() {
    let c = Contract::vendored().unwrap();
    let shape = Shape::Struct("MachineConfiguration".into());
    for f in [
        "1.5",
        "1e24",
        "1e16",
        "1e15",
        "123456789012345678901",
        "1e-7",
        "0.0001",
        "-0",
        "1.0",
        "2.5e-10",
        "1e21",
        "12345678.9",
        "1e300",
        "0.000001",
        "0.00001",
        "5e-324",
        "1e400",
        "-1e400",
        "1.5e999999999",
        "0.5e-400",
        "-12.25",
        "18446744073709551616",
        "-9223372036854775809",
        "300",
        "-1",
        "1E2",
        "1e+2",
        "0.1e1",
    ] {
        let body = format!("{{\"vcpu_count\": {f}, \"mem_size_mib\": {f}}}");
        let ours = validate(&c, &shape, body.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(ours, serde_says::<MachineConfig>(body.as_bytes()), "{body}");
    }
}
