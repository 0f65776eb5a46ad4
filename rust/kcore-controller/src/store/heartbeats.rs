//! Heartbeats: soft state, kept in memory, flushed to the local-only `soft_state` table
//! every few seconds, never turned into operations.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::params;

use super::{ClockSkew, Store, StoreError};

impl Store {
    /// Unix seconds of the node's last heartbeat.
    pub fn last_heartbeat(&self, node_id: &str) -> Option<i64> {
        self.heartbeats.read().ok()?.get(node_id).copied()
    }

    /// Soft state: remember a heartbeat (flushed by [`Store::flush_heartbeats`]).
    pub fn heartbeat(&self, node_id: &str, unix_seconds: i64) {
        if let Ok(mut beats) = self.heartbeats.write() {
            beats.insert(node_id.to_string(), unix_seconds);
        }
        if let Ok(mut dirty) = self.dirty_heartbeats.lock() {
            dirty.insert(node_id.to_string());
        }
    }

    /// Every known last heartbeat (node id -> unix seconds), for peers.
    pub fn heartbeats(&self) -> BTreeMap<String, i64> {
        self.heartbeats
            .read()
            .map(|b| b.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// Takes a heartbeat time learnt from a peer when it is newer than ours, unless it is
    /// beyond the clock bound (a heartbeat in 2100 would keep a node `Ready` for good).
    pub fn observe_heartbeat(&self, node_id: &str, unix_seconds: i64) -> Result<(), ClockSkew> {
        let Ok(secs) = u64::try_from(unix_seconds) else {
            return Ok(());
        };
        self.check_ahead(uhlc::NTP64::from(Duration::from_secs(secs)))?;
        let newer = self
            .heartbeats
            .read()
            .map(|b| b.get(node_id).is_none_or(|t| *t < unix_seconds))
            .unwrap_or(false);
        if newer {
            self.heartbeat(node_id, unix_seconds);
        }
        Ok(())
    }

    /// Writes heartbeats received since the last flush to the local `soft_state` table.
    pub fn flush_heartbeats(&self) -> Result<usize, StoreError> {
        let dirty: Vec<String> = {
            let mut dirty = self
                .dirty_heartbeats
                .lock()
                .map_err(|_| StoreError::Poisoned)?;
            dirty.drain().collect()
        };
        if dirty.is_empty() {
            return Ok(0);
        }
        let beats: Vec<(String, i64)> = {
            let beats = self.heartbeats.read().map_err(|_| StoreError::Poisoned)?;
            dirty
                .into_iter()
                .filter_map(|id| beats.get(&id).map(|t| (id, *t)))
                .collect()
        };
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO soft_state (node_id, last_heartbeat) VALUES (?1, ?2)
                 ON CONFLICT (node_id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat",
            )?;
            for (id, t) in &beats {
                stmt.execute(params![id, t])?;
            }
        }
        tx.commit()?;
        Ok(beats.len())
    }
}
