//! Rendering answers for people (aligned tables) or scripts (`--json`).

use serde_json::Value;

/// Print `rows` as an aligned table with `headers`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

/// A JSON field as display text (`-` when absent).
pub fn field(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Bytes as a short human size.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The phases of a create/start as a table (milliseconds), then the
/// control plane (every phase but the guest's boot) and the total.
pub fn timings_table(phases: &[banger_proto::api::PhaseTiming]) -> String {
    let ms = |v: f64| format!("{v:.3}");
    let mut rows: Vec<Vec<String>> = phases
        .iter()
        .map(|p| vec![p.phase.clone(), ms(p.ms)])
        .collect();
    let total: f64 = phases.iter().map(|p| p.ms).sum();
    let control: f64 = phases
        .iter()
        .filter(|p| p.phase != banger_proto::api::GUEST_PHASE)
        .map(|p| p.ms)
        .sum();
    rows.push(vec!["control plane".into(), ms(control)]);
    rows.push(vec!["total".into(), ms(total)]);
    table(&["PHASE", "MS"], &rows)
}

/// One plain progress line: a percentage when the total is known, the
/// amount in its unit (bytes as a size, seconds, else nothing: a count
/// means nothing without its total).
pub fn progress_line(step: &str, done: u64, total: Option<u64>, unit: Option<&str>) -> String {
    let pct = total.map(|t| format!(" {}%", (done * 100).checked_div(t).unwrap_or(100)));
    let amount = match (unit, total) {
        (Some("bytes"), Some(t)) => format!(" ({} of {})", size(done), size(t)),
        (Some("bytes"), None) => format!(" ({})", size(done)),
        (Some("s"), _) => format!(" ({done}s)"),
        (_, Some(t)) => format!(" ({done}/{t})"),
        (_, None) => format!(" ({done})"),
    };
    format!("{step}:{}{amount}", pct.unwrap_or_default())
}

/// Shows a long operation's progress: bars on a terminal, plain lines
/// (each step, then every 25 %) otherwise. Writes to stderr so `--json`
/// output on stdout stays clean.
pub struct ProgressView {
    tty: bool,
    bar: Option<(String, indicatif::ProgressBar)>,
    last_quarter: (String, u64),
}

impl ProgressView {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        ProgressView {
            tty: std::io::stderr().is_terminal(),
            bar: None,
            last_quarter: (String::new(), 0),
        }
    }

    /// Render one event.
    pub fn event(&mut self, e: &banger_proto::api::Event) {
        use banger_proto::api::Event;
        if e.as_phase().is_some() {
            // Timings: `vm create --timings` shows them, nothing else does.
            return;
        }
        match e {
            Event::Log { message } => {
                self.finish();
                eprintln!("{message}");
            }
            Event::Progress {
                step,
                done,
                total,
                unit,
            } if self.tty => self.bar(step, *done, *total, unit.as_deref()),
            Event::Progress {
                step,
                done,
                total,
                unit,
            } => {
                let quarter = total.map_or(0, |t| (done * 4).checked_div(t).unwrap_or(4));
                if self.last_quarter.0 != *step || quarter > self.last_quarter.1 {
                    eprintln!("{}", progress_line(step, *done, *total, unit.as_deref()));
                    self.last_quarter = (step.clone(), quarter);
                }
            }
            _ => {}
        }
    }

    fn bar(&mut self, step: &str, done: u64, total: Option<u64>, unit: Option<&str>) {
        if self.bar.as_ref().is_none_or(|(s, _)| s != step) {
            self.finish();
            let template = match (total, unit) {
                (Some(_), Some("bytes")) => {
                    "{msg:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
                }
                (Some(_), _) => "{msg:>14} [{bar:30}] {pos}/{len}",
                (None, Some("bytes")) => "{spinner} {msg} {bytes}",
                (None, Some("s")) => "{spinner} {msg} {pos}s",
                (None, _) => "{spinner} {msg} {pos}",
            };
            let style = indicatif::ProgressStyle::with_template(template)
                .expect("template parses")
                .progress_chars("=> ");
            let pb = indicatif::ProgressBar::new(total.unwrap_or(0)).with_style(style);
            pb.set_message(step.to_string());
            self.bar = Some((step.to_string(), pb));
        }
        if let Some((_, pb)) = &self.bar {
            pb.set_position(done);
        }
    }

    /// Close the current bar.
    pub fn finish(&mut self) {
        if let Some((_, pb)) = self.bar.take() {
            pb.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "running".into()],
                vec!["long-name".into(), "x".into()],
            ],
        );
        assert_eq!(t, "NAME       STATE\na          running\nlong-name  x");
    }

    #[test]
    fn progress_lines_print_byte_units_only_for_bytes() {
        assert_eq!(progress_line("disk", 1, Some(1), None), "disk: 100% (1/1)");
        assert_eq!(
            progress_line("waiting for SSH", 3, None, Some("s")),
            "waiting for SSH: (3s)"
        );
        assert_eq!(
            progress_line("copy rootfs", 512 << 20, Some(1 << 30), Some("bytes")),
            "copy rootfs: 50% (512.0 MiB of 1.0 GiB)"
        );
        assert_eq!(
            progress_line("layer", 2048, None, Some("bytes")),
            "layer: (2.0 KiB)"
        );
        for l in [
            progress_line("disk", 1, Some(1), None),
            progress_line("waiting for SSH", 1, None, Some("s")),
        ] {
            assert!(!l.contains(" B"), "{l}");
        }
    }

    #[test]
    fn the_timings_table_sums_the_control_plane_without_the_guest_boot() {
        use banger_proto::api::PhaseTiming;
        let ms = |p: &str, us: u64| PhaseTiming::new(p, std::time::Duration::from_micros(us));
        let t = timings_table(&[
            ms("validate", 1500),
            ms("nat", 2250),
            ms("boot_to_ssh", 40_000),
        ]);
        assert_eq!(
            t,
            "PHASE          MS\nvalidate       1.500\nnat            2.250\nboot_to_ssh    40.000\ncontrol plane  3.750\ntotal          43.750"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size(12), "12 B");
        assert_eq!(size(64 * 1024 * 1024), "64.0 MiB");
    }
}
