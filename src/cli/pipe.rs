//! What happens when stdout is a pipe whose reader has gone (`zoomhook events list | head -1`).
//!
//! Rust starts every program with `SIGPIPE` ignored, so a write to a closed pipe fails with
//! `EPIPE` and `println!` panics ("failed printing to stdout: Broken pipe"). The commands that
//! mostly print get the default disposition back instead, as `cat` or `ls` have it: the kernel
//! ends the process quietly at the first write nobody will read (the shell reports status 141,
//! which it treats as the normal end of a pipeline). One switch at start-up covers every
//! `println!` of every such command, instead of turning each of them into a fallible write.
//!
//! The commands that keep sockets open for long (`serve`, `demo`, `listen`, `simulate`) keep
//! `SIGPIPE` ignored: hyper writes with `writev`, which raises `SIGPIPE` on a socket whose peer
//! has reset it, so a client hanging up would otherwise end the server.

use super::Command;

/// Gives `SIGPIPE` its default disposition back for the commands whose work is printing.
pub fn quiet_on_closed_pipe(command: &Command) {
    if holds_long_lived_sockets(command) {
        return;
    }
    #[cfg(unix)]
    // SAFETY: called once at start-up, before the runtime spawns any thread; `SIG_DFL` is a
    // valid disposition for `SIGPIPE` and installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn holds_long_lived_sockets(command: &Command) -> bool {
    matches!(
        command,
        Command::Serve(_) | Command::Demo(_) | Command::Listen(_) | Command::Simulate(_)
    )
}
