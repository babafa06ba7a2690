//! Man pages rendered from the CLI definition (clap_mangen): `banger(1)` and
//! one page per subcommand (`banger-vm(1)`, `banger-vm-create(1)`, …).

use clap::Command;

/// Section-1 man pages for `cmd` and every visible subcommand below it, as
/// `(file name, roff text)`, the root first.
pub fn render(cmd: Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd;
    cmd.build();
    let mut pages = Vec::new();
    collect(&cmd, &mut pages)?;
    Ok(pages)
}

fn collect(cmd: &Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    // `display_name` is the dash-joined path (`banger-vm-create`) once built.
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let mut text = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut text)?;
    pages.push((format!("{name}.1"), text));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        collect(sub, pages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cli() -> Command {
        Command::new("banger")
            .about("sandboxes")
            .subcommand(
                Command::new("vm")
                    .about("VMs")
                    .subcommand(Command::new("create").arg(Arg::new("name")))
                    .subcommand(Command::new("secret").hide(true)),
            )
            .subcommand(Command::new("doctor").about("checks"))
    }

    #[test]
    fn one_page_per_visible_command_named_by_its_path() {
        let pages = render(cli()).unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "banger.1",
                "banger-vm.1",
                "banger-vm-create.1",
                "banger-doctor.1"
            ]
        );
        let root = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(root.contains(".TH banger 1"), "{root}");
        assert!(root.contains("sandboxes"));
        let create = String::from_utf8(pages[2].1.clone()).unwrap();
        assert!(create.contains(".TH banger-vm-create 1"), "{create}");
    }
}
