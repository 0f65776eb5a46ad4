//! Shared helpers: stand-in scripts, process-group inspection through /proc, tool lookup.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kcore_nix::Program;
use kcore_nix::programs::Tool;

/// Write an executable stand-in script (bash, run as a file, never via `-c`).
pub fn script(dir: &Path, name: &str, body: &str) -> Program {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Program::resolve(name, Some(&path), "KCORE_TEST_STAND_IN").unwrap()
}

/// Resolve a tool, or print `SKIP` and return `None`.
pub fn tool_or_skip(tool: Tool, test: &str) -> Option<Program> {
    match tool.resolve(None) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("SKIP: {test}: {e}");
            None
        }
    }
}

/// Processes (pid, state) whose process group is `pgid`, read from /proc.
pub fn group_members(pgid: i32) -> Vec<(i32, char)> {
    let mut members = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return members;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited while we looked
        };
        // "pid (comm) state ppid pgrp ...": comm may contain spaces and ')', so split after
        // the last ')'.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if pgrp.parse::<i32>().ok() == Some(pgid) {
            members.push((pid, state.chars().next().unwrap_or('?')));
        }
    }
    members
}

/// Whether a process still runs (exists and is not a zombie awaiting its reaper).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Wait (up to 5 s) until no live process remains in group `pgid`; returns the survivors.
/// Zombies do not count: they are dead and only wait for init to reap them.
pub async fn survivors(pgid: i32) -> Vec<(i32, char)> {
    for _ in 0..50 {
        let live: Vec<_> = group_members(pgid)
            .into_iter()
            .filter(|(_, s)| *s != 'Z' && *s != 'X')
            .collect();
        if live.is_empty() {
            return live;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    group_members(pgid)
        .into_iter()
        .filter(|(_, s)| *s != 'Z' && *s != 'X')
        .collect()
}

/// Read a pid a stand-in wrote, waiting for the file to appear.
pub async fn read_pid(path: &Path) -> i32 {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("stand-in never wrote {}", path.display());
}
