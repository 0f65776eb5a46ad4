//! The runner against real processes: exit statuses, stderr in errors, stdin, streaming,
//! timeouts and cancellation killing the whole process group.

use std::sync::mpsc;
use std::time::Duration;

use kcore_nix::{Invocation, RunError, StreamLine};

use crate::support::{alive, read_pid, script, survivors};

#[tokio::test]
async fn success_returns_stdout_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "both",
        r#"echo out; echo err >&2; printf 'no newline'"#,
    );
    let out = Invocation::new(&prog).output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout_lossy(), "out\nno newline");
    assert_eq!(out.stderr_lossy(), "err\n");
}

#[tokio::test]
async fn arguments_reach_the_program_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let prog = script(
        dir.path(),
        "args",
        r#"printf '%s\n' "$#"; printf '<%s>\n' "$@""#,
    );
    let nasty = [
        format!("$(touch {})", marker.display()),
        "; rm -rf /".to_owned(),
        "*".to_owned(),
        "a b\tc".to_owned(),
        "".to_owned(),
        "'\"`".to_owned(),
        "line1\nline2".to_owned(),
    ];
    let out = Invocation::new(&prog).args(&nasty).output().await.unwrap();
    let expected: String = std::iter::once(format!("{}\n", nasty.len()))
        .chain(nasty.iter().map(|a| format!("<{a}>\n")))
        .collect();
    assert_eq!(out.stdout_lossy(), expected);
    assert!(!marker.exists(), "an argument was interpreted by a shell");
}

#[tokio::test]
async fn env_and_current_dir_apply() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "env",
        r#"echo "${KCORE_A-unset}|${KCORE_B-unset}|$PWD""#,
    );
    let work = tempfile::tempdir().unwrap();
    let out = Invocation::new(&prog)
        .env("KCORE_A", "a value")
        .env("KCORE_B", "b")
        .env_remove("KCORE_B")
        .current_dir(work.path())
        .output()
        .await
        .unwrap();
    let canonical = work.path().canonicalize().unwrap();
    assert_eq!(
        out.stdout_lossy().trim(),
        format!("a value|unset|{}", canonical.display())
    );
}

#[tokio::test]
async fn failure_carries_argv_status_and_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "fails",
        r#"for i in $(seq 1 100); do echo "noise $i" >&2; done; echo "error: the real cause" >&2; exit 3"#,
    );
    let inv = Invocation::new(&prog).args(["--flag", "two words"]);
    let err = inv.output().await.unwrap_err();
    let RunError::Failed {
        argv,
        status,
        stderr_tail,
    } = &err
    else {
        panic!("expected Failed, got {err:?}");
    };
    assert_eq!(argv, &inv.argv());
    assert_eq!(status.code(), Some(3));
    assert!(
        stderr_tail.ends_with("error: the real cause"),
        "{stderr_tail}"
    );
    assert!(
        !stderr_tail.contains("noise 1\n"),
        "tail is bounded: {stderr_tail}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{} --flag 'two words'", prog.path().display())),
        "{msg}"
    );
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.contains("error: the real cause"), "{msg}");
    assert_eq!(err.status().and_then(|s| s.code()), Some(3));
    assert_eq!(err.stderr_tail(), Some(stderr_tail.as_str()));

    // The unchecked variant hands back the status instead.
    let out = inv.output_unchecked().await.unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn spawn_failure_names_the_argv() {
    let dir = tempfile::tempdir().unwrap();
    // Executable bit set but not a valid executable: exec fails with ENOEXEC.
    let path = dir.path().join("garbage");
    std::fs::write(&path, [0u8, 1, 2, 3]).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let prog = kcore_nix::Program::resolve("garbage", Some(&path), "KCORE_TEST_X").unwrap();
    let err = Invocation::new(&prog).arg("x").output().await.unwrap_err();
    assert!(matches!(err, RunError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!("{} x", path.display())),
        "{err}"
    );
}

#[tokio::test]
async fn stdin_is_fed_and_large_outputs_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    // Echo stdin back on stdout and also on stderr: both pipes fill far past their 64 KiB
    // buffers, which deadlocks a runner that reads them one after the other.
    let prog = script(dir.path(), "tee", "tee /dev/stderr");
    let input: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = Invocation::new(&prog)
        .stdin_bytes(input.clone())
        .timeout(Duration::from_secs(60))
        .output()
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input && out.stderr == input);
}

#[tokio::test]
async fn a_program_that_ignores_stdin_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(dir.path(), "ignore", "exit 0");
    let out = Invocation::new(&prog)
        .stdin_bytes(vec![b'x'; 1 << 20])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test]
async fn capture_json_parses_or_says_what_came_back() {
    let dir = tempfile::tempdir().unwrap();
    let good = script(dir.path(), "good", r#"echo '{"a": [1, 2]}'"#);
    let v: serde_json::Value = Invocation::new(&good).capture_json().await.unwrap();
    assert_eq!(v["a"][1], 2);
    let bad = script(dir.path(), "bad", "echo 'warning: not json'");
    let err = Invocation::new(&bad)
        .capture_json::<serde_json::Value>()
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Json { .. }), "{err:?}");
    assert!(err.to_string().contains("warning: not json"), "{err}");
}

#[tokio::test]
async fn stream_delivers_lines_while_the_program_runs() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    // The stand-in only finishes properly once the test saw its first line and created
    // `go`: that proves lines are delivered as they arrive, not at exit.
    let prog = script(
        dir.path(),
        "progress",
        &format!(
            r#"echo "step 1"; echo "warn 1" >&2
for i in $(seq 1 200); do [ -e '{go}' ] && break; sleep 0.05; done
[ -e '{go}' ] && echo "step 2" || echo "never saw go"
printf 'crlf\r\n'; printf 'last'"#,
            go = go.display()
        ),
    );
    let (tx, rx) = mpsc::channel::<StreamLine>();
    let watcher = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv() {
            if line == StreamLine::Stdout("step 1".into()) {
                std::fs::write(&go, "").unwrap();
            }
            seen.push(line);
        }
        seen
    });
    let out = Invocation::new(&prog)
        .timeout(Duration::from_secs(30))
        .stream(move |line| tx.send(line).unwrap())
        .await
        .unwrap();
    let seen = watcher.join().unwrap();
    let stdout: Vec<_> = seen
        .iter()
        .filter_map(|l| match l {
            StreamLine::Stdout(s) => Some(s.as_str()),
            StreamLine::Stderr(_) => None,
        })
        .collect();
    assert_eq!(stdout, ["step 1", "step 2", "crlf", "last"]);
    assert!(seen.contains(&StreamLine::Stderr("warn 1".into())));
    assert_eq!(out.stdout_lossy(), "step 1\nstep 2\ncrlf\r\nlast");
    assert_eq!(out.stderr_lossy(), "warn 1\n");
}

#[tokio::test]
async fn stream_still_fails_on_a_bad_exit() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(dir.path(), "bad", "echo working; echo 'boom' >&2; exit 7");
    let mut lines = Vec::new();
    let err = Invocation::new(&prog)
        .stream(|l| lines.push(l))
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Failed { .. }), "{err:?}");
    assert!(err.to_string().contains("boom"));
    assert_eq!(lines.len(), 2);
}

/// The stand-in records its own pid (= its process group id) and a background child's pid.
fn forking_stand_in(dir: &std::path::Path, exit_code: Option<i32>) -> kcore_nix::Program {
    let tail = match exit_code {
        Some(code) => format!("exit {code}"),
        None => "sleep 1000".to_owned(),
    };
    script(
        dir,
        "forker",
        &format!(
            r#"trap '' TERM INT HUP
echo $$ > '{d}/leader.pid'
sleep 1000 &
echo $! > '{d}/child.pid'
echo "started" >&2
{tail}"#,
            d = dir.display()
        ),
    )
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let prog = forking_stand_in(dir.path(), None);
    let err = Invocation::new(&prog)
        .timeout(Duration::from_secs(2))
        .output()
        .await
        .unwrap_err();
    let RunError::TimedOut {
        argv,
        after,
        stderr_tail,
    } = &err
    else {
        panic!("expected TimedOut, got {err:?}");
    };
    assert_eq!(argv[0], prog.path().to_string_lossy());
    assert_eq!(*after, Duration::from_secs(2));
    assert_eq!(stderr_tail, "started");
    assert!(err.to_string().contains("process group was killed"));

    let leader = read_pid(&dir.path().join("leader.pid")).await;
    let child = read_pid(&dir.path().join("child.pid")).await;
    assert_eq!(
        survivors(leader).await,
        vec![],
        "processes of group {leader} survived"
    );
    assert!(!alive(leader) && !alive(child));
}

#[tokio::test]
async fn a_clean_exit_leaves_no_background_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let prog = forking_stand_in(dir.path(), Some(0));
    // No timeout: the background `sleep` holds the pipes open, so without the group kill
    // this call would hang for 1000 s.
    let out = tokio::time::timeout(Duration::from_secs(30), Invocation::new(&prog).output())
        .await
        .expect("the runner waited for a background child")
        .unwrap();
    assert!(out.status.success());
    let leader = read_pid(&dir.path().join("leader.pid")).await;
    let child = read_pid(&dir.path().join("child.pid")).await;
    assert_eq!(survivors(leader).await, vec![]);
    assert!(!alive(child));
}

#[tokio::test]
async fn a_dropped_future_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let prog = forking_stand_in(dir.path(), None);
    let inv = Invocation::new(&prog);
    let leader_file = dir.path().join("child.pid");
    // Cancel the call (as a `select!` or a dropped request would) once the stand-in is up.
    let cancelled = tokio::select! {
        _ = inv.output() => false,
        _ = read_pid(&leader_file) => true,
    };
    assert!(cancelled);
    let leader = read_pid(&dir.path().join("leader.pid")).await;
    let child = read_pid(&leader_file).await;
    assert_eq!(survivors(leader).await, vec![]);
    assert!(!alive(child));
}

#[tokio::test]
async fn killed_by_a_signal_is_a_failure_with_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "selfkill",
        "echo dying >&2; kill -TERM $$; sleep 5",
    );
    let err = Invocation::new(&prog).output().await.unwrap_err();
    let RunError::Failed { status, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(status),
        Some(15)
    );
    assert!(
        err.to_string().contains("SIGTERM") || err.to_string().contains("signal: 15"),
        "{err}"
    );
}

#[tokio::test]
async fn stream_reports_progress_then_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "hangs",
        &format!(
            r#"echo $$ > '{d}/leader.pid'; echo "building"; echo "copying" >&2; sleep 1000"#,
            d = dir.path().display()
        ),
    );
    let mut lines = Vec::new();
    let err = Invocation::new(&prog)
        .timeout(Duration::from_secs(2))
        .stream(|l| lines.push(l))
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::TimedOut { .. }), "{err:?}");
    assert!(
        lines.contains(&StreamLine::Stdout("building".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&StreamLine::Stderr("copying".into())),
        "{lines:?}"
    );
    let leader = read_pid(&dir.path().join("leader.pid")).await;
    assert_eq!(survivors(leader).await, vec![]);
}

#[tokio::test]
async fn non_utf8_arguments_pass_through_byte_for_byte() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let prog = script(dir.path(), "raw", r#"printf '%s' "$1""#);
    let raw = OsStr::from_bytes(b"caf\xe9\xff-\x01");
    let inv = Invocation::new(&prog).arg(raw);
    let out = inv.output().await.unwrap();
    assert_eq!(out.stdout, raw.as_bytes());
    // argv() is for messages: lossy, but never panics.
    assert!(inv.argv()[1].starts_with("caf"));
}

#[tokio::test]
async fn a_process_that_leaves_the_group_cannot_hang_the_call() {
    let Ok(setsid) = kcore_nix::Program::resolve("setsid", None, "KCORE_TEST_SETSID") else {
        eprintln!("SKIP: a_process_that_leaves_the_group_cannot_hang_the_call: no setsid");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The sleeper records its pid once it runs in its own session (so the group kill cannot
    // reach it), still holding our stdout pipe and our stdin pipe (which it never reads)
    // open. Bash gives background jobs /dev/null as stdin, hence the saved descriptor 3.
    let sleeper = script(
        dir.path(),
        "sleeper",
        &format!(
            "echo $$ > '{d}/escaped.tmp'; mv '{d}/escaped.tmp' '{d}/escaped.pid'; exec sleep 1000"
        ),
    );
    let prog = script(
        dir.path(),
        "escapes",
        &format!(
            r#"exec 3<&0
'{setsid}' '{sleeper}' <&3 &
for i in $(seq 1 200); do [ -e '{d}/escaped.pid' ] && break; sleep 0.05; done
echo "done""#,
            setsid = setsid.path().display(),
            sleeper = sleeper.path().display(),
        ),
    );
    let started = std::time::Instant::now();
    // More stdin than a pipe buffers, so the writer blocks on the sleeper. The timeout is
    // shorter than the drain: a program that exited in time must not count as timed out.
    let call = Invocation::new(&prog)
        .stdin_bytes(vec![b'x'; 1 << 20])
        .timeout(Duration::from_secs(2));
    let result = tokio::time::timeout(Duration::from_secs(60), call.output()).await;
    let elapsed = started.elapsed();
    let escaped = read_pid(&dir.path().join("escaped.pid")).await;
    let escaped_alive = alive(escaped);
    // Clean up our own escaped process before asserting anything.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escaped),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(
        escaped_alive,
        "the sleeper did not escape; the test proves nothing"
    );
    // The call returned after the bounded drain, not after the sleeper's 1000 s.
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    let out = result
        .expect("the call waited for an escaped process")
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout_lossy(), "done\n");
}

#[tokio::test]
async fn nix_evaluation_errors_carry_the_expression_and_nix_message() {
    let Some(nix) = crate::support::tool_or_skip(
        kcore_nix::programs::NIX_INSTANTIATE,
        "nix_evaluation_errors_carry_the_expression_and_nix_message",
    ) else {
        return;
    };
    let expr = r#"let x = 1; in throw "kcore-test-boom""#;
    let err = Invocation::new(&nix)
        .args([
            "--eval",
            "--strict",
            "--readonly-mode",
            "--json",
            "-E",
            expr,
        ])
        .timeout(Duration::from_secs(60))
        .capture_json::<serde_json::Value>()
        .await
        .unwrap_err();
    let RunError::Failed {
        argv,
        status,
        stderr_tail,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(argv.last().map(String::as_str), Some(expr));
    assert!(!status.success());
    assert!(stderr_tail.contains("kcore-test-boom"), "{stderr_tail}");
    assert!(err.to_string().contains("kcore-test-boom"));
}

/// The limits are in place in the child before its first instruction (set between fork and
/// exec): the stand-in reads them back with bash's `ulimit`.
#[tokio::test]
async fn limits_are_set_in_the_child_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "limits",
        "echo \"as=$(ulimit -v) cpu=$(ulimit -t) core=$(ulimit -c)\"",
    );
    let limits = kcore_nix::Limits {
        address_space_bytes: Some(512 * 1024 * 1024),
        cpu_seconds: Some(7),
    };
    let out = Invocation::new(&prog)
        .limits(limits)
        .output()
        .await
        .unwrap();
    // bash's `ulimit -v` is in KiB.
    assert_eq!(out.stdout_lossy(), "as=524288 cpu=7 core=0\n");
    // Without limits the child keeps the parent's.
    let out = Invocation::new(&prog).output().await.unwrap();
    assert!(
        !out.stdout_lossy().contains("cpu=7"),
        "{}",
        out.stdout_lossy()
    );
}

/// A spinning program is stopped by its CPU bound (SIGXCPU), long before the wall clock,
/// and `cpu_bound_hit` says so.
#[tokio::test]
async fn a_spinning_child_is_stopped_by_its_cpu_bound() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(dir.path(), "spin", "while :; do :; done");
    let limits = kcore_nix::Limits {
        address_space_bytes: None,
        cpu_seconds: Some(1),
    };
    let out = Invocation::new(&prog)
        .limits(limits)
        .timeout(Duration::from_secs(120))
        .output_unchecked()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(limits.cpu_bound_hit(out.status), "{:?}", out.status);
    assert!(!kcore_nix::Limits::default().cpu_bound_hit(out.status));
}

/// Output past the bound stops the program (its group killed) instead of growing the
/// caller: a flood of lines and one endless line, each under a bound of 1 MiB.
#[tokio::test]
async fn output_past_the_bound_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        (
            "flood",
            "while :; do echo 0123456789abcdef0123456789abcdef; done",
        ),
        (
            "oneline",
            "while :; do printf 0123456789abcdef0123456789abcdef; done",
        ),
        (
            "stderr",
            "while :; do echo 0123456789abcdef0123456789abcdef >&2; done",
        ),
    ] {
        let prog = script(dir.path(), name, body);
        let err = Invocation::new(&prog)
            .max_output_bytes(1024 * 1024)
            .timeout(Duration::from_secs(120))
            .output()
            .await
            .unwrap_err();
        assert!(
            matches!(err, RunError::OutputTooLarge { limit: 1048576, .. }),
            "{name}: {err:?}"
        );
        assert!(
            err.to_string().contains("process group was killed"),
            "{err}"
        );
    }
    // Output under the bound is untouched.
    let prog = script(dir.path(), "small", "echo fine");
    let out = Invocation::new(&prog)
        .max_output_bytes(1024)
        .output()
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy(), "fine\n");
}
