//! Where the processing loop is, and why it goes back: [`Phase`], and the reasons that are the
//! `reason` label of `processor_rewinds_total` ([`RewindReason`]) and
//! `processor_rebuilds_total` ([`Rebuild`]). Docs and alert rules use the labels: keep them.

use tributary_kafka::group::{GroupFailure, RebuildReason};

/// Why the open transaction was lost and every partition goes back to its last commit, with a
/// new producer, without leaving the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindReason {
    /// Kafka required an abort (`txn_requires_abort`), and the transaction was aborted.
    Abort,
    /// The producer is done for (fatal, fenced, timed out, or a retriable error that kept
    /// failing).
    Fatal,
    /// The schema registry could not be reached to decode a record.
    RegistryUnavailable,
}

impl RewindReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Abort => "abort",
            Self::Fatal => "fatal",
            Self::RegistryUnavailable => "registry_unavailable",
        }
    }
}

/// Why the consumer and producer are rebuilt from scratch (the member leaves the group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// The transactional producer could not be started.
    Producer,
    /// The consumer could not be created, or could not take up new partitions.
    Consumer,
    /// A rewind could not seek back to the last commit.
    Rewind,
    /// A window result does not fit the output topic's schema.
    OutputSchema,
    /// The group gave up on the member (subscribe, rebalance, a fatal consumer error).
    Group(GroupFailure),
}

impl RebuildReason for Rebuild {
    fn label(&self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Consumer => "consumer",
            Self::Rewind => "rewind",
            Self::OutputSchema => "output_schema",
            Self::Group(g) => g.label(),
        }
    }
}

impl From<GroupFailure> for Rebuild {
    fn from(g: GroupFailure) -> Self {
        Self::Group(g)
    }
}

/// The state of the processing loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Records are processed and transactions committed.
    Running,
    /// The open transaction is lost: until the rewind runs, records are ignored and nothing
    /// is committed.
    Lost(RewindReason),
    /// The member must be rebuilt; nothing more is processed or committed.
    Failed(Rebuild),
}

impl Phase {
    pub fn running(self) -> bool {
        self == Self::Running
    }

    /// Why the open transaction was lost, while a rewind is due.
    pub fn lost(self) -> Option<RewindReason> {
        match self {
            Self::Lost(r) => Some(r),
            _ => None,
        }
    }

    /// Why the member must be rebuilt.
    pub fn failure(self) -> Option<Rebuild> {
        match self {
            Self::Failed(r) => Some(r),
            _ => None,
        }
    }

    /// The transaction is lost, unless it already was (the first reason stays) or the member
    /// failed.
    pub fn lose(&mut self, reason: RewindReason) {
        if self.running() {
            *self = Self::Lost(reason);
        }
    }

    /// The member must be rebuilt, unless it already must be (the first reason stays).
    pub fn fail(&mut self, reason: Rebuild) {
        if self.failure().is_none() {
            *self = Self::Failed(reason);
        }
    }

    /// The rewind is done.
    pub fn rewound(&mut self) {
        if self.lost().is_some() {
            *self = Self::Running;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_documented_ones() {
        let rewinds = [
            (RewindReason::Abort, "abort"),
            (RewindReason::Fatal, "fatal"),
            (RewindReason::RegistryUnavailable, "registry_unavailable"),
        ];
        for (r, label) in rewinds {
            assert_eq!(r.label(), label);
        }
        let rebuilds = [
            (Rebuild::Producer, "producer"),
            (Rebuild::Consumer, "consumer"),
            (Rebuild::Rewind, "rewind"),
            (Rebuild::OutputSchema, "output_schema"),
            (Rebuild::Group(GroupFailure::Subscribe), "subscribe"),
            (Rebuild::Group(GroupFailure::Rebalance), "rebalance"),
            (Rebuild::Group(GroupFailure::ConsumerFatal), "consumer_fatal"),
        ];
        for (r, label) in rebuilds {
            assert_eq!(r.label(), label);
        }
        assert_eq!(Rebuild::from(GroupFailure::Rebalance), Rebuild::Group(GroupFailure::Rebalance));
    }

    #[test]
    fn the_first_reason_stays_and_failure_ends_everything() {
        let mut p = Phase::Running;
        assert!(p.running());
        p.lose(RewindReason::Abort);
        p.lose(RewindReason::Fatal);
        assert_eq!(p.lost(), Some(RewindReason::Abort));
        p.rewound();
        assert!(p.running());
        p.lose(RewindReason::RegistryUnavailable);
        p.fail(Rebuild::Rewind);
        assert_eq!((p.lost(), p.failure()), (None, Some(Rebuild::Rewind)), "failing ends a rewind");
        p.fail(Rebuild::Consumer);
        p.lose(RewindReason::Abort);
        p.rewound();
        assert_eq!(p, Phase::Failed(Rebuild::Rewind), "nothing leaves the failed state");
    }
}
