//! Replays every entry of the vendored v1.16.1 transcript, in order, against the double.

mod common;

use common::{call, fault, Running};
use serde_json::Value;

const TRANSCRIPT: &str = include_str!("../contract/transcript-v1.16.1.md");

/// One `### METHOD /path — what` entry.
#[derive(Debug)]
struct Entry {
    title: String,
    method: String,
    path: String,
    request: Option<String>,
    status: u16,
    response: Option<String>,
}

fn parse_transcript(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for chunk in text.split("\n### ").skip(1) {
        let mut lines = chunk.lines();
        let title = lines.next().unwrap().trim().to_string();
        let mut words = title.split_whitespace();
        let method = words.next().unwrap().to_string();
        let path = words.next().unwrap().to_string();
        let (mut request, mut status, mut response) = (None, None, None);
        for line in lines {
            if let Some(b) = line.strip_prefix("> ") {
                request = Some(b.to_string());
            } else if let Some(s) = line.strip_prefix("< HTTP/1.1 ") {
                status = Some(s.trim().parse().unwrap());
            } else if let Some(b) = line.strip_prefix("< ") {
                response = Some(b.to_string());
            }
        }
        let status = status.unwrap_or_else(|| panic!("{title}: no status line"));
        entries.push(Entry {
            title,
            method,
            path,
            request,
            status,
            response,
        });
    }
    entries
}

#[test]
fn transcript_parses_into_every_entry() {
    let entries = parse_transcript(TRANSCRIPT);
    assert_eq!(entries.len(), TRANSCRIPT.matches("\n### ").count());
    assert_eq!(entries.len(), 37);
    assert_eq!(entries[0].method, "GET");
    assert_eq!(
        entries.last().unwrap().request.as_deref(),
        Some(r#"{"action_type": "SendCtrlAltDel"}"#)
    );
}

#[tokio::test]
async fn transcript_replays_exactly() {
    let double = Running::start(None).await;
    let files = tempfile::Builder::new()
        .prefix("bgtest-files-")
        .tempdir()
        .unwrap();
    let kernel = files.path().join("bgtest-vmlinux");
    let rootfs = files.path().join("bgtest-rootfs.ext4");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    std::fs::write(&rootfs, vec![0u8; 4096]).unwrap();
    let fill = |s: &str| {
        s.replace("<kernel>", kernel.to_str().unwrap())
            .replace("<rootfs>", rootfs.to_str().unwrap())
            .replace("<dir>", files.path().to_str().unwrap())
    };
    let entries = parse_transcript(TRANSCRIPT);
    let mut mismatches = Vec::new();
    for e in &entries {
        let body = e.request.as_deref().map(fill);
        let (status, got) = call(&double.sock, &e.method, &e.path, body.as_deref()).await;
        if status != e.status {
            mismatches.push(format!(
                "{}: status {status}, want {} ({got})",
                e.title, e.status
            ));
            continue;
        }
        match (&e.response, status) {
            (None, _) => {
                if !got.is_empty() {
                    mismatches.push(format!("{}: unexpected body {got}", e.title));
                }
            }
            (Some(want), 200) => {
                let want: Value = serde_json::from_str(want).unwrap();
                let got: Value = serde_json::from_str(&got).unwrap();
                if want != got {
                    mismatches.push(format!("{}: body {got}, want {want}", e.title));
                }
            }
            // Every fault_message, column numbers included, is compared exactly.
            (Some(want), _) => {
                if fault(want) != fault(&got) {
                    mismatches.push(format!(
                        "{}:\n   got  {}\n   want {}",
                        e.title,
                        fault(&got),
                        fault(want)
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "transcript mismatches:\n{}",
        mismatches.join("\n")
    );
    // The double recorded every request, in order.
    let rec = double.recorder.requests();
    assert_eq!(rec.len(), entries.len());
    for (r, e) in rec.iter().zip(&entries) {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            (e.method.as_str(), e.path.as_str())
        );
    }
}
