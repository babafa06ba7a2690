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
        match e {
            Event::Log { message } => {
                self.finish();
                eprintln!("{message}");
            }
            Event::Progress { step, done, total } if self.tty => self.bar(step, *done, *total),
            Event::Progress { step, done, total } => {
                let quarter = total.map_or(0, |t| (done * 4).checked_div(t).unwrap_or(4));
                if self.last_quarter.0 != *step || quarter > self.last_quarter.1 {
                    let pct = total.map_or(String::new(), |t| {
                        format!(" {}%", (done * 100).checked_div(t).unwrap_or(100))
                    });
                    eprintln!("{step}:{pct} ({})", size(*done));
                    self.last_quarter = (step.clone(), quarter);
                }
            }
            _ => {}
        }
    }

    fn bar(&mut self, step: &str, done: u64, total: Option<u64>) {
        if self.bar.as_ref().is_none_or(|(s, _)| s != step) {
            self.finish();
            let pb = match total {
                Some(t) => indicatif::ProgressBar::new(t).with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("template parses")
                    .progress_chars("=> "),
                ),
                None => indicatif::ProgressBar::new_spinner(),
            };
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
    fn sizes() {
        assert_eq!(size(12), "12 B");
        assert_eq!(size(64 * 1024 * 1024), "64.0 MiB");
    }
}
