//! What the store does once when it opens: set aside operations stamped beyond the clock
//! bound, and move the clock past everything already merged.

use std::collections::{BTreeMap, HashSet};

use rusqlite::params;

use super::{StartupRefusal, Store, StoreError, parse_hlc};

impl Store {
    /// Moves operations stamped beyond the bound (stored before the bound existed) to
    /// `refused_ops`, re-merges the fields they held from what is left, and forgets
    /// heartbeats beyond the bound.
    pub(super) fn refuse_future_at_start(&self) -> Result<Vec<StartupRefusal>, StoreError> {
        let now = uhlc::system_time_clock();
        let limit = now + *self.clock.get_delta();
        let limit_hex = format!("{:016x}", limit.as_u64());
        let limit_unix = i64::try_from(limit.to_duration().as_secs()).unwrap_or(i64::MAX);
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        let future: Vec<(String, String, String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT hlc, origin, resource, field FROM ops WHERE substr(hlc, 1, 16) > ?1
                 UNION SELECT hlc, origin, resource, field FROM fields WHERE substr(hlc, 1, 16) > ?1",
            )?;
            let rows = stmt.query_map(params![limit_hex], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let dropped_beats = tx.execute(
            "DELETE FROM soft_state WHERE last_heartbeat > ?1",
            params![limit_unix],
        )?;
        if future.is_empty() {
            tx.commit()?;
            if dropped_beats > 0 {
                tracing::warn!(
                    heartbeats = dropped_beats,
                    "heartbeats stamped beyond maxClockSkewSeconds were forgotten at start"
                );
            }
            return Ok(Vec::new());
        }
        let refused_at = now.to_string_rfc3339_lossy();
        tx.execute(
            "INSERT OR IGNORE INTO refused_ops (hlc, origin, resource, field, value, refused_at, reason)
             SELECT hlc, origin, resource, field, value, ?2, 'stamped beyond maxClockSkewSeconds at start'
             FROM ops WHERE substr(hlc, 1, 16) > ?1",
            params![limit_hex, refused_at],
        )?;
        tx.execute(
            "DELETE FROM ops WHERE substr(hlc, 1, 16) > ?1",
            params![limit_hex],
        )?;
        // The vector goes back to what is left (the store raises it again from `ops`).
        tx.execute(
            "DELETE FROM vector WHERE substr(hlc, 1, 16) > ?1",
            params![limit_hex],
        )?;
        let mut summary: BTreeMap<String, StartupRefusal> = BTreeMap::new();
        let mut keys = HashSet::new();
        for (hlc, origin, resource, field) in &future {
            let ahead = parse_hlc(hlc)
                .map(|ts| (*ts.get_time() - now).to_duration().as_secs())
                .unwrap_or(0);
            let entry = summary.entry(origin.clone()).or_insert(StartupRefusal {
                origin: origin.clone(),
                operations: 0,
                max_ahead_seconds: 0,
            });
            entry.operations += 1;
            entry.max_ahead_seconds = entry.max_ahead_seconds.max(ahead);
            keys.insert((resource.clone(), field.clone()));
        }
        for (resource, field) in &keys {
            tx.execute(
                "DELETE FROM fields WHERE resource = ?1 AND field = ?2",
                params![resource, field],
            )?;
            tx.execute(
                "INSERT INTO fields (resource, field, hlc, origin, value)
                 SELECT resource, field, hlc, origin, value FROM ops
                 WHERE resource = ?1 AND field = ?2 ORDER BY hlc DESC LIMIT 1",
                params![resource, field],
            )?;
        }
        tx.commit()?;
        let summary: Vec<StartupRefusal> = summary.into_values().collect();
        for s in &summary {
            tracing::warn!(
                origin = %s.origin,
                operations = s.operations,
                max_ahead_seconds = s.max_ahead_seconds,
                heartbeats = dropped_beats,
                "operations stamped beyond maxClockSkewSeconds were moved to refused_ops at start; the fields they held went back to their previous values"
            );
        }
        Ok(summary)
    }

    /// Moves the clock past every stored operation, so after a restart local writes still
    /// win over everything merged before it.
    pub(super) fn seed_clock(&self) -> Result<(), StoreError> {
        let newest: Option<String> = {
            let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            // `vector` and `fields` too: compacted operations are no longer in `ops`.
            conn.query_row(
                "SELECT MAX(hlc) FROM (SELECT hlc FROM ops UNION ALL SELECT hlc FROM vector
                    UNION ALL SELECT hlc FROM fields)",
                [],
                |row| row.get(0),
            )?
        };
        if let Some(ts) = newest.as_deref().and_then(parse_hlc)
            && self.check_ahead(*ts.get_time()).is_ok()
        {
            let _ = self.clock.update_with_timestamp(&ts);
        }
        Ok(())
    }
}
