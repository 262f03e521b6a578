//! The audit trail's entries and their hash chain. Hashing and verification are pure, so the
//! adapters only store and load rows and cannot disagree on what a valid chain is.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as the caller reports it. Never put a secret in here: entries are readable
/// by every operator and can never be deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// Who did it: a token name, a worker id, `system`.
    pub actor: String,
    /// Dotted verb, e.g. `command.enqueued`, `command.finished`, `credential.put`.
    pub action: String,
    pub project_id: Option<String>,
    pub command_id: Option<String>,
    /// Structured details (provider, request digest, status, timings).
    pub details: serde_json::Value,
}

/// A stored entry with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub project_id: Option<String>,
    pub command_id: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields that are hashed, in a fixed order. `serde_json` writes struct fields in
/// declaration order and object keys sorted (no `preserve_order`), so this is canonical.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    at: String,
    actor: &'a str,
    action: &'a str,
    project_id: Option<&'a str>,
    command_id: Option<&'a str>,
    details: &'a serde_json::Value,
}

/// Truncates to microseconds, the precision both databases keep, so a stored timestamp
/// hashes the same after a round trip.
pub fn audit_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// `sha256(prev_hash || canonical entry)`, hex-encoded.
pub fn chain_hash(prev_hash: &str, seq: i64, at: DateTime<Utc>, entry: &NewAuditEntry) -> String {
    let canonical = Canonical {
        seq,
        at: audit_time(at).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        actor: &entry.actor,
        action: &entry.action,
        project_id: entry.project_id.as_deref(),
        command_id: entry.command_id.as_deref(),
        details: &entry.details,
    };
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    // Serializing plain strings and a JSON value cannot fail.
    hasher.update(serde_json::to_vec(&canonical).unwrap_or_default());
    hex::encode(hasher.finalize())
}

impl AuditEntry {
    /// Builds the entry that follows `prev_hash` at position `seq`.
    pub fn seal(prev_hash: &str, seq: i64, at: DateTime<Utc>, entry: NewAuditEntry) -> Self {
        let at = audit_time(at);
        let hash = chain_hash(prev_hash, seq, at, &entry);
        Self {
            seq,
            at,
            actor: entry.actor,
            action: entry.action,
            project_id: entry.project_id,
            command_id: entry.command_id,
            details: entry.details,
            prev_hash: prev_hash.to_owned(),
            hash,
        }
    }

    /// The hash this entry should carry given its own content.
    pub fn expected_hash(&self) -> String {
        let entry = NewAuditEntry {
            actor: self.actor.clone(),
            action: self.action.clone(),
            project_id: self.project_id.clone(),
            command_id: self.command_id.clone(),
            details: self.details.clone(),
        };
        chain_hash(&self.prev_hash, self.seq, self.at, &entry)
    }
}

/// Why a chain does not verify, naming the first bad entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenLink {
    #[error("audit entry {seq} was altered: its hash does not match its content")]
    Altered { seq: i64 },
    #[error(
        "audit entry {seq} does not follow the entry before it (an entry was removed or inserted)"
    )]
    Unlinked { seq: i64 },
}

/// Walks the chain in order, keeping only the previous hash, so a caller can stream
/// millions of entries through it.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    prev_hash: String,
    prev_seq: Option<i64>,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            prev_hash: GENESIS_HASH.to_owned(),
            prev_seq: None,
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks the next entry; the first error is the first broken link.
    pub fn check(&mut self, entry: &AuditEntry) -> Result<(), BrokenLink> {
        let contiguous = self.prev_seq.is_none_or(|prev| entry.seq == prev + 1);
        if entry.prev_hash != self.prev_hash || !contiguous {
            return Err(BrokenLink::Unlinked { seq: entry.seq });
        }
        if entry.expected_hash() != entry.hash {
            return Err(BrokenLink::Altered { seq: entry.seq });
        }
        self.prev_hash.clone_from(&entry.hash);
        self.prev_seq = Some(entry.seq);
        self.checked += 1;
        Ok(())
    }

    /// How many entries verified so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }
}

/// Domain separation of the checkpoint MAC's key (`MasterKey::mac`).
const CHECKPOINT_PURPOSE: &str = "rdev audit checkpoint v1";

/// The chain's head at one moment, signed under the master key. Exported off the box (the
/// server log, the `audit.checkpoint` webhook, `GET /audit/checkpoint`), it lets
/// `rdev audit verify --against` detect newest entries deleted later: a database writer can
/// recompute a shortened chain but cannot produce a checkpoint without the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    /// Sequence number of the newest entry (the chain's length).
    pub seq: i64,
    /// That entry's hash.
    pub head_hash: String,
    /// When the checkpoint was taken.
    pub at: DateTime<Utc>,
    /// Fingerprint of the master key that signed it (never the key).
    pub key_fingerprint: String,
    /// Hex HMAC-SHA256 over `seq|head_hash|at|key_fingerprint` under a key derived from the
    /// master key.
    pub mac: String,
}

/// Why a checkpoint cannot be trusted or no longer matches the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "the checkpoint was signed by the master key with fingerprint {theirs}, not by the key \
         in use ({ours})"
    )]
    ForeignKey { theirs: String, ours: String },
    #[error("the checkpoint's MAC does not verify: it was altered or forged")]
    BadMac,
}

fn checkpoint_message(seq: i64, head_hash: &str, at: DateTime<Utc>, fingerprint: &str) -> String {
    format!(
        "{seq}|{head_hash}|{}|{fingerprint}",
        audit_time(at).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

impl AuditCheckpoint {
    /// Signs the head `(seq, head_hash)` as of `at`.
    pub fn sign(key: &super::MasterKey, seq: i64, head_hash: &str, at: DateTime<Utc>) -> Self {
        let at = audit_time(at);
        let key_fingerprint = key.fingerprint();
        let message = checkpoint_message(seq, head_hash, at, &key_fingerprint);
        Self {
            seq,
            head_hash: head_hash.to_owned(),
            at,
            key_fingerprint,
            mac: hex::encode(key.mac(CHECKPOINT_PURPOSE, message.as_bytes())),
        }
    }

    /// Checks that `key` made this checkpoint, comparing MACs in constant time.
    pub fn authenticate(&self, key: &super::MasterKey) -> Result<(), CheckpointError> {
        let ours = key.fingerprint();
        if self.key_fingerprint != ours {
            return Err(CheckpointError::ForeignKey {
                theirs: self.key_fingerprint.clone(),
                ours,
            });
        }
        let message = checkpoint_message(self.seq, &self.head_hash, self.at, &self.key_fingerprint);
        let expected = key.mac(CHECKPOINT_PURPOSE, message.as_bytes());
        let given = hex::decode(&self.mac).unwrap_or_default();
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(CheckpointError::BadMac)
        }
    }
}

/// How the chain compares with a trusted checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorFailure {
    #[error("the checkpoint is not trusted: {0}")]
    Untrusted(#[from] CheckpointError),
    #[error(
        "audit trail TRUNCATED: checkpoint at seq {seq} from {at}, chain ends at {ends_at} \
         (the newest entries were deleted)"
    )]
    Truncated {
        seq: i64,
        at: DateTime<Utc>,
        ends_at: i64,
    },
    #[error(
        "audit trail REWRITTEN: entry {seq} no longer has the hash the checkpoint from {at} \
         recorded"
    )]
    Diverged { seq: i64, at: DateTime<Utc> },
}

/// Compares an authenticated checkpoint with the stored entry at its `seq` (`None` when
/// there is none) and the chain's last `seq` (0 when empty).
pub fn check_anchor(
    checkpoint: &AuditCheckpoint,
    at_seq: Option<&AuditEntry>,
    ends_at: i64,
) -> Result<(), AnchorFailure> {
    match at_seq {
        None => Err(AnchorFailure::Truncated {
            seq: checkpoint.seq,
            at: checkpoint.at,
            ends_at,
        }),
        Some(entry) if entry.hash != checkpoint.head_hash => Err(AnchorFailure::Diverged {
            seq: checkpoint.seq,
            at: checkpoint.at,
        }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> NewAuditEntry {
        NewAuditEntry {
            actor: "tester".into(),
            action: action.into(),
            project_id: Some("demo".into()),
            command_id: None,
            details: serde_json::json!({"b": 1, "a": [1, 2]}),
        }
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = AuditEntry::seal(&prev, seq, Utc::now(), entry("x.y"));
                prev.clone_from(&e.hash);
                e
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let mut verifier = ChainVerifier::default();
        for e in chain(5) {
            verifier.check(&e).expect("valid");
        }
        assert_eq!(verifier.checked(), 5);
    }

    #[test]
    fn an_edited_entry_is_reported() {
        let mut entries = chain(4);
        entries[2].details = serde_json::json!({"b": 2});
        let mut verifier = ChainVerifier::default();
        let first = entries.iter().find_map(|e| verifier.check(e).err());
        assert_eq!(first, Some(BrokenLink::Altered { seq: 3 }));
    }

    #[test]
    fn a_removed_entry_is_reported() {
        let mut entries = chain(4);
        entries.remove(1);
        let mut verifier = ChainVerifier::default();
        let first = entries.iter().find_map(|e| verifier.check(e).err());
        assert_eq!(first, Some(BrokenLink::Unlinked { seq: 3 }));
    }

    #[test]
    fn checkpoints_verify_only_untouched_and_under_their_own_key() {
        use crate::domain::MasterKey;
        let key = MasterKey::from_bytes([3; 32]);
        let other = MasterKey::from_bytes([4; 32]);
        let checkpoint = AuditCheckpoint::sign(&key, 7, "ab", Utc::now());
        assert_eq!(checkpoint.authenticate(&key), Ok(()));
        let mut rewound = checkpoint.clone();
        rewound.seq = 5;
        assert_eq!(rewound.authenticate(&key), Err(CheckpointError::BadMac));
        assert!(matches!(
            checkpoint.authenticate(&other),
            Err(CheckpointError::ForeignKey { .. })
        ));
        let forged = AuditCheckpoint {
            key_fingerprint: key.fingerprint(),
            ..AuditCheckpoint::sign(&other, 7, "ab", checkpoint.at)
        };
        assert_eq!(forged.authenticate(&key), Err(CheckpointError::BadMac));
    }
}
