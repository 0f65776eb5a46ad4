//! Tests of the operation log, the merge, the clock bound and the node records.

use super::*;
use kcore_api::cluster::{Approval, CertificateInfo, NodeReport};

fn report(host: &str) -> NodeReport {
    NodeReport {
        hostname: host.into(),
        dc_id: "DC1".into(),
        ..Default::default()
    }
}

#[test]
fn state_survives_reopen_and_heartbeats_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite");
    {
        let store = Store::open(&path, "ctl1").unwrap();
        store
            .put_node(
                "n1",
                &report("hv1"),
                Approval::Pending,
                "2026-01-01T00:00:00Z",
            )
            .unwrap();
        store.set_approval("n1", Approval::Approved).unwrap();
        store.heartbeat("n1", 1234);
        assert_eq!(store.flush_heartbeats().unwrap(), 1);
    }
    let store = Store::open(&path, "ctl1").unwrap();
    let rec = store.node("n1").unwrap();
    assert_eq!(rec.approval, Approval::Approved);
    assert_eq!(rec.report.hostname, "hv1");
    assert_eq!(store.last_heartbeat("n1"), Some(1234));
    let mode: String = store
        .conn
        .lock()
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn merge_is_last_writer_wins_and_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
    store
        .put_node("n1", &report("a"), Approval::Approved, "t")
        .unwrap();
    let newer = Op {
        hlc: "ffffffffffffffff-1".into(),
        origin: "ctl2".into(),
        resource: "node/n1".into(),
        field: "report.hostname".into(),
        value: Some("\"remote\"".into()),
    };
    let older = Op {
        hlc: "0000000000000001-1".into(),
        value: Some("\"stale\"".into()),
        ..newer.clone()
    };
    store.merge(&[newer.clone(), older]).unwrap();
    store.merge(&[newer]).unwrap();
    assert_eq!(store.node("n1").unwrap().report.hostname, "remote");
    // A later local write has a lower clock than the forged remote one (merged raw,
    // past the clock check): remote wins.
    store.update_report("n1", &report("local")).unwrap();
    assert_eq!(store.node("n1").unwrap().report.hostname, "remote");
    // report.* keeps only the newest operation per origin: the older one is gone.
    assert_eq!(store.ops_since("ctl2", "", 100).unwrap().len(), 1);
}

fn op_at(time: u64, field: &str, value: &str) -> Op {
    Op {
        hlc: format!("{time:016x}-1"),
        origin: "ctl2".into(),
        resource: "node/n1".into(),
        field: field.into(),
        value: Some(value.into()),
    }
}

fn ntp_in(secs_from_now: i64) -> u64 {
    let now = uhlc::system_time_clock().to_duration().as_secs();
    let at = now.saturating_add_signed(secs_from_now);
    uhlc::NTP64::from(Duration::from_secs(at)).as_u64()
}

fn count(store: &Store, sql: &str) -> i64 {
    store
        .conn
        .lock()
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn far_future_operations_and_heartbeats_are_refused_within_bound_ones_taken() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
    store
        .put_node("n1", &report("a"), Approval::Approved, "t")
        .unwrap();
    let far = op_at(0xffff_ffff_ffff_fff0, "approval", "\"Rejected\"");
    let near = op_at(ntp_in(30), "report.hostname", "\"near\"");
    let merge = store.merge_remote(&[far.clone(), near]).unwrap();
    assert_eq!(merge.merged, 1);
    assert_eq!(merge.refused.len(), 1);
    let skew = merge.refused[0].skew.unwrap();
    assert!(
        skew.ahead > Duration::from_secs(70 * 365 * 24 * 3600),
        "{skew}"
    );
    assert_eq!(skew.bound, DEFAULT_MAX_CLOCK_SKEW);
    assert_eq!(store.node("n1").unwrap().approval, Approval::Approved);
    assert_eq!(store.node("n1").unwrap().report.hostname, "near");
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM ops WHERE field = 'approval' AND origin = 'ctl2'"
        ),
        0
    );
    // The op 30 s ahead moved the clock: a local write right after it still wins.
    store.update_report("n1", &report("local")).unwrap();
    assert_eq!(store.node("n1").unwrap().report.hostname, "local");
    // Unreadable stamps are refused too.
    let bad = Op {
        hlc: "zz".into(),
        ..far
    };
    assert_eq!(store.merge_remote(&[bad]).unwrap().refused[0].skew, None);

    assert!(store.observe_heartbeat("n1", 4_102_444_800).is_err());
    assert_eq!(store.last_heartbeat("n1"), None);
    let soon = api_now() + 10;
    store.observe_heartbeat("n1", soon).unwrap();
    assert_eq!(store.last_heartbeat("n1"), Some(soon));
}

fn api_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[test]
fn a_write_that_loses_says_so_and_a_reopen_refuses_what_is_beyond_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    {
        let store = Store::open(&path, "ctl1").unwrap();
        store
            .put_node("n1", &report("a"), Approval::Approved, "t")
            .unwrap();
        // As a controller before the bound existed would have stored it.
        store
            .merge(&[op_at(0xffff_ffff_ffff_fff0, "approval", "\"Approved\"")])
            .unwrap();
        store.heartbeat("n1", 4_102_444_800);
        store.flush_heartbeats().unwrap();
        let outcome = store.set_approval("n1", Approval::Rejected).unwrap();
        let WriteOutcome::Superseded(newer) = outcome else {
            panic!("the write should have lost: {outcome:?}");
        };
        assert_eq!(newer.origin, "ctl2");
        assert_eq!(newer.value.as_deref(), Some("\"Approved\""));
        assert!(newer.time.starts_with("2106-"), "{}", newer.time);
        assert_eq!(store.node("n1").unwrap().approval, Approval::Approved);
    }
    let store = Store::open(&path, "ctl1").unwrap();
    assert_eq!(
        store.refused_at_start(),
        &[StartupRefusal {
            origin: "ctl2".into(),
            operations: 1,
            max_ahead_seconds: store.refused_at_start()[0].max_ahead_seconds,
        }]
    );
    assert!(store.refused_at_start()[0].max_ahead_seconds > 70 * 365 * 24 * 3600);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM refused_ops"), 1);
    // The field went back to the newest remaining value (the local reject), the
    // far-future heartbeat is forgotten, and the next write wins.
    assert_eq!(store.node("n1").unwrap().approval, Approval::Rejected);
    assert_eq!(store.last_heartbeat("n1"), None);
    assert_eq!(
        store.set_approval("n1", Approval::Pending).unwrap(),
        WriteOutcome::Won
    );
}

#[test]
fn a_restart_keeps_local_writes_ahead_of_merged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    {
        let store = Store::open(&path, "ctl1").unwrap();
        store
            .put_node("n1", &report("a"), Approval::Approved, "t")
            .unwrap();
        let near = op_at(ntp_in(40), "approval", "\"Pending\"");
        assert_eq!(store.merge_remote(&[near]).unwrap().merged, 1);
    }
    let store = Store::open(&path, "ctl1").unwrap();
    assert!(store.refused_at_start().is_empty());
    assert_eq!(
        store.set_approval("n1", Approval::Rejected).unwrap(),
        WriteOutcome::Won
    );
}

#[test]
fn repeated_reports_keep_one_operation_per_field_and_free_space_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
    store
        .put_node("n1", &report("a"), Approval::Approved, "t")
        .unwrap();
    let rows = |s: &Store| count(s, "SELECT COUNT(*) FROM ops");
    let mut r = report("a");
    r.labels.insert("x".into(), "0".into());
    store.update_report("n1", &r).unwrap();
    let after_one = rows(&store);
    for i in 1..50 {
        r.labels.insert("x".into(), format!("v{i}"));
        store.update_report("n1", &r).unwrap();
    }
    assert_eq!(store.node("n1").unwrap().report.labels["x"], "v49");
    assert_eq!(rows(&store), after_one);

    use kcore_api::cluster::VolumeMount;
    let mount = |free| VolumeMount {
        path: "/var/lib/kcore".into(),
        size_bytes: Some(1000),
        free_bytes: Some(free),
    };
    r.storage.mounts = vec![mount(500)];
    store.update_report("n1", &r).unwrap();
    // 5 bytes of 1000 moved: not written (the stored report keeps 500).
    r.storage.mounts = vec![mount(505)];
    store.update_report("n1", &r).unwrap();
    let free = |s: &Store| s.node("n1").unwrap().report.storage.mounts[0].free_bytes;
    assert_eq!(free(&store), Some(500));
    // 100 bytes (10%) moved: written at once.
    r.storage.mounts = vec![mount(400)];
    store.update_report("n1", &r).unwrap();
    assert_eq!(free(&store), Some(400));
    // Anything else changing in storage is written at once too.
    r.storage.mounts[0].path = "/srv".into();
    store.update_report("n1", &r).unwrap();
    assert_eq!(
        store.node("n1").unwrap().report.storage.mounts[0].path,
        "/srv"
    );
}

#[test]
fn older_databases_are_compacted_at_open_and_certificates_keep_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    {
        let store = Store::open(&path, "ctl1").unwrap();
        store
            .put_node("n1", &report("a"), Approval::Approved, "t")
            .unwrap();
        let info = |serial: &str| CertificateInfo {
            serial: serial.into(),
            not_before: "a".into(),
            not_after: "b".into(),
            issuer: "c".into(),
            issuer_serial: None,
        };
        store.set_certificate("n1", &info("01")).unwrap();
        store.set_certificate("n1", &info("02")).unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM ops WHERE field = 'certificate'"
            ),
            1
        );
        // As an uncompacted database holds them: ten old hostnames from ctl2.
        let conn = store.conn.lock().unwrap();
        for i in 1..=10u64 {
            conn.execute(
                "INSERT INTO ops (hlc, origin, resource, field, value) VALUES (?1, 'ctl2', 'node/n1', 'report.hostname', '\"old\"')",
                params![format!("{i:016x}-1")],
            )
            .unwrap();
        }
    }
    let store = Store::open(&path, "ctl1").unwrap();
    // One from ctl1 (the registration), one (the newest) from ctl2.
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM ops WHERE field = 'report.hostname'"
        ),
        2
    );
    assert_eq!(store.node("n1").unwrap().certificate.unwrap().serial, "02");
}

#[test]
fn unchanged_re_registration_writes_no_operations() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.sqlite"), "ctl1").unwrap();
    store
        .put_node("n1", &report("a"), Approval::Approved, "t")
        .unwrap();
    let before = store.ops_since("ctl1", "", 1000).unwrap().len();
    store
        .put_node("n1", &report("a"), Approval::Pending, "t2")
        .unwrap();
    assert_eq!(store.ops_since("ctl1", "", 1000).unwrap().len(), before);
    assert_eq!(store.node("n1").unwrap().approval, Approval::Approved);
}
