//! `zoomhook completions bash|zsh|fish` — the shell completion script, generated from the same
//! clap definitions the binary parses with, so it cannot drift from the commands.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

/// `zoomhook completions SHELL`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish (also elvish, powershell).
    pub shell: Shell,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn run(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
    Ok(())
}
