//! `pate-ledger`: the durable ledger of everything the aggregator answered,
//! in a crate of its own so that the aggregator (which writes it) and `pate
//! privacy report` (which reads it) share it without one linking the other.
//!
//! SQLite in WAL mode with `synchronous = FULL`: a batch's queries are
//! committed in one transaction before its answer leaves the process, so a
//! crash or a restart never forgets spent budget, and a retried request id
//! is answered from the record, never with fresh noise (averaging repeated
//! noisy answers would strip the noise off).
//!
//! The ledger pins what its numbers mean: the mechanism and RDP orders, and
//! the epsilon limit and delta of the budget. A restart with other values is
//! refused (a restart must not quietly raise the "global" budget) unless the
//! operator asks for the change, which is then recorded in `budget_changes`.
//!
//! Refusals cost no privacy, so they are written without an fsync: see
//! [`Ledger::record_refusal`].

use std::path::Path;

use pate_privacy::Mechanism;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite failed.
    #[error("ledger database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A request id came back with other samples than first recorded.
    #[error("request id {0} was already used for other samples; use a fresh request id")]
    ReusedId(String),
    /// A stored value does not decode.
    #[error("ledger is corrupt: {0}")]
    Corrupt(String),
    /// The budget's limit or delta differs from the one pinned in the ledger.
    #[error("ledger was written with {key} = {stored}, but this aggregator is configured with {configured}; \
             restart with {key} = {stored}, or pass --change-budget to change it (the change is recorded in the ledger)")]
    BudgetChanged {
        /// `epsilon_limit` or `delta`.
        key: &'static str,
        /// What the ledger holds.
        stored: String,
        /// What was configured now.
        configured: String,
    },
    /// The ledger was written for a different accounting set-up.
    #[error("ledger was written with {key} = {stored}, but this aggregator is configured with {configured}; use the same configuration or a fresh ledger file")]
    Mismatch {
        /// The setting that differs.
        key: &'static str,
        /// What the ledger holds.
        stored: String,
        /// What was configured now.
        configured: String,
    },
}

/// One answered (or abstained) query as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRecord {
    /// The noise-free vote histogram (never released).
    pub histogram: Vec<u32>,
    /// The released label, `None` for an abstention.
    pub answer: Option<u8>,
    /// Data-independent RDP charged for it, at the ledger's orders.
    pub rdp: Vec<f64>,
}

/// The ledger file.
pub struct Ledger {
    conn: Connection,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    n INTEGER NOT NULL,
    labels TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    student TEXT
);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES requests(request_id),
    position INTEGER NOT NULL,
    histogram TEXT NOT NULL,
    answer INTEGER NOT NULL,
    rdp BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    changed_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
";

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn f64s_to_blob(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_to_f64s(b: &[u8]) -> Result<Vec<f64>, LedgerError> {
    if b.len() % 8 != 0 {
        return Err(LedgerError::Corrupt(format!("rdp blob of {} bytes", b.len())));
    }
    Ok(b.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
}

/// Decodes one stored query row, refusing anything a correct ledger never
/// holds: a restore must not quietly under-count (a short or negative RDP
/// curve) or turn a corrupt answer into a free abstention.
pub fn decode_query(histogram: &str, answer: i64, rdp: &[u8], orders: usize) -> Result<QueryRecord, LedgerError> {
    let histogram = serde_json::from_str(histogram).map_err(|e| LedgerError::Corrupt(format!("histogram {histogram:?}: {e}")))?;
    let answer = match answer {
        -1 => None,
        a => Some(u8::try_from(a).map_err(|_| LedgerError::Corrupt(format!("answer {a} is neither -1 nor a class")))?),
    };
    let rdp = blob_to_f64s(rdp)?;
    if rdp.len() != orders {
        return Err(LedgerError::Corrupt(format!("rdp curve of {} orders, the ledger accounts at {orders}", rdp.len())));
    }
    if let Some(bad) = rdp.iter().find(|x| !(x.is_finite() && **x >= 0.0)) {
        return Err(LedgerError::Corrupt(format!("rdp value {bad} is not a finite cost >= 0")));
    }
    Ok(QueryRecord { histogram, answer, rdp })
}

impl Ledger {
    /// Opens (or creates) the ledger at `path` for `mechanism` accounted at
    /// `orders`. A ledger written with other settings is refused rather
    /// than mixed.
    pub fn open(path: &Path, mechanism: &Mechanism, orders: &[f64]) -> Result<Self, LedgerError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        // Ledgers from before per-student budgets: their rows have no student.
        let has_student: bool =
            conn.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('requests') WHERE name = 'student'", [], |r| r.get(0))?;
        if !has_student {
            conn.execute_batch("ALTER TABLE requests ADD COLUMN student TEXT")?;
        }
        let ledger = Ledger { conn };
        ledger.pin("mechanism", &json(mechanism))?;
        ledger.pin("orders", &json(&orders))?;
        Ok(ledger)
    }

    /// Opens an existing ledger for reading (reports).
    pub fn open_read_only(path: &Path) -> Result<Self, LedgerError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(Ledger { conn })
    }

    /// The value stored under `key` in `meta`, if any.
    fn meta(&self, key: &str) -> Result<Option<String>, LedgerError> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Stores `value` under `key`, or checks it equals what is stored.
    fn pin(&self, key: &'static str, value: &str) -> Result<(), LedgerError> {
        match self.meta(key)? {
            None => {
                self.conn.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![key, value])?;
                Ok(())
            }
            Some(s) if s == value => Ok(()),
            Some(s) => Err(LedgerError::Mismatch { key, stored: s, configured: value.to_string() }),
        }
    }

    /// Pins the budget's epsilon limit and delta: the first open stores
    /// them; later opens must match, unless `allow_change`, which updates
    /// them and records each change (old, new, time) in `budget_changes`.
    /// Returns the changes made, as `(key, old, new)`.
    pub fn pin_budget(
        &mut self,
        epsilon_limit: f64,
        delta: f64,
        allow_change: bool,
    ) -> Result<Vec<(&'static str, String, String)>, LedgerError> {
        let tx = self.conn.transaction()?;
        let mut changes = Vec::new();
        for (key, value) in [("epsilon_limit", json(&epsilon_limit)), ("delta", json(&delta))] {
            let stored: Option<String> =
                tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?;
            match stored {
                None => {
                    tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![key, value])?;
                }
                Some(s) if s == value => {}
                Some(s) if allow_change => {
                    tx.execute("UPDATE meta SET value = ?2 WHERE key = ?1", params![key, value])?;
                    tx.execute(
                        "INSERT INTO budget_changes (key, old, new, changed_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![key, s, value, now_ms()],
                    )?;
                    changes.push((key, s, value));
                }
                Some(s) => return Err(LedgerError::BudgetChanged { key, stored: s, configured: value }),
            }
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Every recorded change of the budget, oldest first, as
    /// `(key, old, new)`.
    pub fn budget_changes(&self) -> Result<Vec<(String, String, String)>, LedgerError> {
        let mut stmt = self.conn.prepare("SELECT key, old, new FROM budget_changes ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The mechanism the ledger was written for.
    pub fn mechanism(&self) -> Result<Mechanism, LedgerError> {
        let s: String = self.conn.query_row("SELECT value FROM meta WHERE key = 'mechanism'", [], |r| r.get(0))?;
        serde_json::from_str(&s).map_err(|e| LedgerError::Corrupt(format!("mechanism {s:?}: {e}")))
    }

    /// The RDP orders the ledger's costs are given at.
    pub fn orders(&self) -> Result<Vec<f64>, LedgerError> {
        let s: String = self.conn.query_row("SELECT value FROM meta WHERE key = 'orders'", [], |r| r.get(0))?;
        serde_json::from_str(&s).map_err(|e| LedgerError::Corrupt(format!("orders: {e}")))
    }

    /// The labels recorded for `request_id`, if it was answered before.
    /// `digest` identifies the samples: the same id with other samples is
    /// an error, never an answer meant for different inputs.
    pub fn lookup(&self, request_id: &str, digest: &str) -> Result<Option<Vec<i32>>, LedgerError> {
        let row: Option<(String, String)> = self
            .conn
            .query_row("SELECT digest, labels FROM requests WHERE request_id = ?1", [request_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((stored, labels)) = row else { return Ok(None) };
        if stored != digest {
            return Err(LedgerError::ReusedId(request_id.to_string()));
        }
        let labels = serde_json::from_str(&labels)
            .map_err(|e| LedgerError::Corrupt(format!("labels of {request_id}: {e}")))?;
        Ok(Some(labels))
    }

    /// Commits one answered request of `student` (the caller's identity,
    /// see `Caller::key`) and its queries in one durable transaction.
    pub fn record(&mut self, request_id: &str, digest: &str, queries: &[QueryRecord], student: &str) -> Result<(), LedgerError> {
        let labels: Vec<i32> = queries.iter().map(|q| q.answer.map_or(-1, i32::from)).collect();
        // Answers are always synced (a refusal may have left NORMAL behind
        // if restoring FULL failed).
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO requests (request_id, digest, n, labels, created_ms, student) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![request_id, digest, queries.len() as i64, json(&labels), now_ms(), student],
        )?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO queries (request_id, position, histogram, answer, rdp) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (i, q) in queries.iter().enumerate() {
                insert.execute(params![request_id, i as i64, json(&q.histogram), labels[i], f64s_to_blob(&q.rdp)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a refused request (it cost nothing), without an fsync.
    ///
    /// In WAL mode, `synchronous = NORMAL` appends the commit to the WAL
    /// with a plain write: it survives a crash or kill of the process (the
    /// bytes are in the OS page cache) and is synced with the next answer's
    /// commit or checkpoint; only an OS crash or power loss before then can
    /// lose it, and then it loses a refusal count, never an answer or a
    /// charge. A flood of refused requests so costs no disk flushes.
    pub fn record_refusal(&mut self, request_id: &str, n: u64) -> Result<(), LedgerError> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let inserted = self.conn.execute(
            "INSERT INTO refusals (request_id, n, created_ms) VALUES (?1, ?2, ?3)",
            params![request_id, n as i64, now_ms()],
        );
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        inserted?;
        Ok(())
    }

    /// Files that answering stopped at data-dependent target `target`
    /// ([`pate_privacy::target`]: the first refusal ends answering), so a
    /// restart at the same or a lower target stays stopped. Keeps the
    /// highest target filed.
    pub fn record_target_stop(&mut self, target: f64) -> Result<(), LedgerError> {
        if self.target_stopped_at()?.is_some_and(|at| at >= target) {
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('target_stopped_at', ?1) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [json(&target)],
        )?;
        Ok(())
    }

    /// The highest data-dependent target answering stopped at, if any.
    pub fn target_stopped_at(&self) -> Result<Option<f64>, LedgerError> {
        self.meta("target_stopped_at")?
            .map(|s| serde_json::from_str(&s).map_err(|e| LedgerError::Corrupt(format!("target_stopped_at {s:?}: {e}"))))
            .transpose()
    }

    /// Every recorded query, oldest first.
    pub fn queries(&self) -> Result<Vec<QueryRecord>, LedgerError> {
        let mut stmt = self.conn.prepare("SELECT histogram, answer, rdp FROM queries ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?)))?;
        let orders = self.orders()?.len();
        rows.map(|row| {
            let (h, answer, rdp) = row?;
            decode_query(&h, answer, &rdp, orders)
        })
        .collect()
    }

    /// Every recorded query with the student who asked it, oldest first
    /// (rows from before per-student accounting count as `anonymous`).
    pub fn queries_by_student(&self) -> Result<Vec<(String, QueryRecord)>, LedgerError> {
        let mut stmt = self.conn.prepare(
            "SELECT COALESCE(r.student, 'anonymous'), q.histogram, q.answer, q.rdp \
             FROM queries q JOIN requests r ON r.request_id = q.request_id ORDER BY q.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, Vec<u8>>(3)?))
        })?;
        rows.map(|row| {
            let (student, h, answer, rdp) = row?;
            let histogram = serde_json::from_str(&h).map_err(|e| LedgerError::Corrupt(format!("histogram {h:?}: {e}")))?;
            Ok((student, QueryRecord { histogram, answer: u8::try_from(answer).ok(), rdp: blob_to_f64s(&rdp)? }))
        })
        .collect()
    }

    /// Total queries refused so far.
    pub fn refused(&self) -> Result<u64, LedgerError> {
        let n: i64 = self.conn.query_row("SELECT COALESCE(SUM(n), 0) FROM refusals", [], |r| r.get(0))?;
        u64::try_from(n).map_err(|_| LedgerError::Corrupt(format!("refused count {n} is negative")))
    }

    /// Replays the recorded costs into a fresh budget.
    pub fn restore_into(&self, budget: &mut pate_privacy::budget::Budget) -> Result<u64, LedgerError> {
        let queries = self.queries()?;
        for q in &queries {
            budget.restore(&q.rdp, q.answer.is_some());
        }
        budget.restore_refused(self.refused()?);
        Ok(queries.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pate_privacy::budget::Budget;

    fn record(answer: Option<u8>) -> QueryRecord {
        QueryRecord { histogram: vec![3, 1], answer, rdp: vec![0.1, 0.2] }
    }

    #[test]
    fn survives_reopen_and_restores_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.db");
        let m = Mechanism::LnMax { scale: 20.0 };
        let orders = vec![2.0, 3.0];
        {
            let mut l = Ledger::open(&path, &m, &orders).expect("open");
            l.record("r1", "d1", &[record(Some(0)), record(Some(1))], "pate://student/0").expect("record");
            l.record_refusal("r2", 5).expect("refusal");
            assert!(l.record("r1", "d1", &[record(Some(0))], "pate://student/0").is_err(), "a request id is recorded once");
            l.record("r3", "d3", &[record(None)], "pate://student/1").expect("record");
        }
        let l = Ledger::open(&path, &m, &orders).expect("reopen");
        assert_eq!(l.lookup("r1", "d1").expect("lookup"), Some(vec![0, 1]));
        assert!(matches!(l.lookup("r1", "other samples"), Err(LedgerError::ReusedId(_))));
        assert_eq!(l.lookup("nope", "d1").expect("lookup"), None);
        let mut b = Budget::new(m, 10.0, 0.0, orders.clone()).expect("budget");
        assert_eq!(l.restore_into(&mut b).expect("restore"), 3);
        let s = b.snapshot();
        assert_eq!((s.queries_answered, s.queries_refused, s.queries_abstained), (2, 5, 1));
        assert!((s.epsilon_spent - 0.2).abs() < 1e-12, "pure DP: only the answers cost");
        let by: Vec<(String, bool)> =
            l.queries_by_student().expect("by student").into_iter().map(|(k, q)| (k, q.answer.is_some())).collect();
        let want = [("pate://student/0", true), ("pate://student/0", true), ("pate://student/1", false)];
        assert_eq!(by, want.map(|(k, a)| (k.to_string(), a)));
    }

    #[test]
    fn pins_limit_and_delta_and_records_explicit_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.db");
        let (m, orders) = (Mechanism::GnMax { sigma: 40.0 }, vec![2.0]);
        let mut l = Ledger::open(&path, &m, &orders).expect("open");
        assert!(l.pin_budget(5.0, 1e-5, false).expect("first pin").is_empty());
        drop(l);
        let mut l = Ledger::open(&path, &m, &orders).expect("reopen");
        l.pin_budget(5.0, 1e-5, false).expect("same budget");
        let err = l.pin_budget(50.0, 1e-5, false).expect_err("a raised limit is refused");
        assert!(matches!(err, LedgerError::BudgetChanged { key: "epsilon_limit", .. }), "{err}");
        assert!(err.to_string().contains("--change-budget"), "{err}");
        let err = l.pin_budget(5.0, 1e-3, false).expect_err("another delta is refused");
        assert!(matches!(err, LedgerError::BudgetChanged { key: "delta", .. }), "{err}");
        // Nothing was half-changed by the refused attempts.
        l.pin_budget(5.0, 1e-5, false).expect("still the first budget");
        let changes = l.pin_budget(6.0, 1e-6, true).expect("explicit change");
        assert_eq!(changes.len(), 2);
        drop(l);
        let mut l = Ledger::open(&path, &m, &orders).expect("reopen");
        l.pin_budget(6.0, 1e-6, false).expect("the change is now the pinned budget");
        assert!(l.pin_budget(5.0, 1e-5, false).is_err());
        let log = l.budget_changes().expect("changes");
        assert_eq!(log, vec![
            ("epsilon_limit".to_string(), "5.0".to_string(), "6.0".to_string()),
            ("delta".to_string(), "0.00001".to_string(), "1e-6".to_string()),
        ]);
    }

    #[test]
    fn a_refusal_leaves_answers_fully_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = Ledger::open(&dir.path().join("l.db"), &Mechanism::LnMax { scale: 2.0 }, &[2.0]).expect("open");
        let sync = |l: &Ledger| -> i64 { l.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).expect("pragma") };
        assert_eq!(sync(&l), 2, "FULL");
        l.record_refusal("r", 3).expect("refusal");
        assert_eq!(sync(&l), 2, "back to FULL after a refusal");
        assert_eq!(l.refused().expect("refused"), 3);
    }

    /// Rows a correct ledger never holds are refused, not restored.
    #[test]
    fn a_target_stop_survives_reopen_and_keeps_the_highest_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("l.db");
        let m = Mechanism::GnMax { sigma: 10.0 };
        let mut l = Ledger::open(&path, &m, &[2.0, 4.0]).expect("open");
        assert_eq!(l.target_stopped_at().expect("read"), None);
        l.record_target_stop(1.5).expect("record");
        l.record_target_stop(1.0).expect("a lower target keeps 1.5");
        drop(l);
        let mut l = Ledger::open(&path, &m, &[2.0, 4.0]).expect("reopen");
        assert_eq!(l.target_stopped_at().expect("read"), Some(1.5));
        l.record_target_stop(2.0).expect("raised");
        assert_eq!(l.target_stopped_at().expect("read"), Some(2.0));
    }

    #[test]
    fn corrupt_rows_are_refused() {
        let blob = |v: &[f64]| f64s_to_blob(v);
        assert!(decode_query("[1,2]", -1, &blob(&[0.1, 0.2]), 2).expect("abstention").answer.is_none());
        assert_eq!(decode_query("[1,2]", 255, &blob(&[0.1, 0.2]), 2).expect("answer").answer, Some(255));
        for (h, a, rdp) in [
            ("[1,2]", 300, blob(&[0.1, 0.2])),
            ("[1,2]", -2, blob(&[0.1, 0.2])),
            ("[1,2]", 0, blob(&[0.1])),
            ("[1,2]", 0, blob(&[0.1, -0.2])),
            ("[1,2]", 0, blob(&[0.1, f64::NAN])),
            ("[1,2]", 0, vec![0; 15]),
            ("[1,-2]", 0, blob(&[0.1, 0.2])),
        ] {
            assert!(matches!(decode_query(h, a, &rdp, 2), Err(LedgerError::Corrupt(_))), "{h} {a} {rdp:?}");
        }
    }

    /// The property-test twin of `fuzz/fuzz_targets/ledger_rows.rs`: any
    /// stored row decodes into a record a budget can restore (finite,
    /// non-negative, one value per order) or is refused as corrupt.
    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn any_row_restores_soundly_or_is_refused(
                histogram in prop_oneof![
                    Just("[3,1]".to_string()),
                    vec(proptest::sample::select(&['0', '9', ',', '[', ']', '-', '.', ' '][..]), 0..12).prop_map(|c| c.into_iter().collect()),
                ],
                answer in prop_oneof![-2i64..12, any::<i64>()],
                rdp in prop_oneof![vec(any::<f64>(), 0..4).prop_map(|v| f64s_to_blob(&v)), vec(any::<u8>(), 0..40)],
            ) {
                let orders = [2.0, 3.0];
                let Ok(q) = decode_query(&histogram, answer, &rdp, orders.len()) else { return Ok(()) };
                prop_assert_eq!(q.rdp.len(), orders.len());
                let mut b = Budget::new(Mechanism::GnMax { sigma: 10.0 }, 1.0, 1e-5, orders.to_vec()).expect("budget");
                b.restore(&q.rdp, q.answer.is_some());
                let spent = b.spent();
                prop_assert!(spent.is_finite() && spent >= 0.0, "spent {}", spent);
            }
        }
    }

    #[test]
    fn refuses_a_ledger_of_another_mechanism() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.db");
        Ledger::open(&path, &Mechanism::LnMax { scale: 20.0 }, &[2.0]).expect("open");
        let err = Ledger::open(&path, &Mechanism::GnMax { sigma: 40.0 }, &[2.0]).err().expect("mismatch");
        assert!(matches!(err, LedgerError::Mismatch { key: "mechanism", .. }), "{err}");
    }
}
