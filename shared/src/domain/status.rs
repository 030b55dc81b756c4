//! Lifecycle states of organizations, teams, model groups, jobs, calls and batches, as stored
//! in PostgreSQL.

use serde::{Deserialize, Serialize};

use crate::domain::batch_api::BatchEndpoint;
use crate::domain::stored_names::stored_names;

/// Whether an organization is active or suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrganizationStatus {
    Active,
    Suspended,
}

stored_names!(OrganizationStatus {
    Active => "active",
    Suspended => "suspended",
});

/// Whether a team's key is accepted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TeamStatus {
    Active,
    Suspended,
}

stored_names!(TeamStatus {
    Active => "active",
    Suspended => "suspended",
});

/// Whether a model group is active or inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ModelGroupStatus {
    Active,
    Inactive,
}

stored_names!(ModelGroupStatus {
    Active => "active",
    Inactive => "inactive",
});

/// A job's lifecycle: pending -> in_progress -> (completing ->) completed | failed, or expired,
/// or cancelled by the client.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    InProgress,
    Completing,
    Completed,
    Failed,
    Expired,
    Cancelled,
}

impl JobStatus {
    /// Every status, for error messages and filters.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::InProgress,
        JobStatus::Completing,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Expired,
        JobStatus::Cancelled,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completing => "completing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Expired => "expired",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether calls may still be added: the job is open, neither being completed (`completing`
    /// waits only for its calls to finish) nor settled.
    pub fn accepts_calls(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::InProgress)
    }
}

/// A call's lifecycle: queued -> running -> succeeded | failed; a queued call of a cancelled job
/// becomes cancelled and never runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CallStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl CallStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Running => "running",
            CallStatus::Succeeded => "succeeded",
            CallStatus::Failed => "failed",
            CallStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the call has its final result.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallStatus::Succeeded | CallStatus::Failed | CallStatus::Cancelled
        )
    }
}

/// The upstream endpoint a call is sent to: chat completions (every call of the job API) or
/// embeddings (a line of an embeddings batch).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CallEndpoint {
    #[default]
    Chat,
    Embeddings,
}

impl CallEndpoint {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallEndpoint::Chat => "chat",
            CallEndpoint::Embeddings => "embeddings",
        }
    }

    /// The OpenAI path of the endpoint, as batch files and batches name it.
    pub fn path(self) -> &'static str {
        BatchEndpoint::from(self).as_str()
    }
}

/// A batch of OpenAI's Batch API: validating -> in_progress -> finalizing -> completed; or
/// failed (its file is malformed), expired (the window ended first), or cancelling -> cancelled.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    /// Whether the batch has ended (its files, if any, are written).
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Completed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_status_names_round_trip() {
        for status in JobStatus::ALL {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_value(status).expect("serializes");
            assert_eq!(json, status.as_str());
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn call_status_names_match_their_serialized_form() {
        for status in [
            CallStatus::Queued,
            CallStatus::Running,
            CallStatus::Succeeded,
            CallStatus::Failed,
            CallStatus::Cancelled,
        ] {
            let json = serde_json::to_value(status).expect("serializes");
            assert_eq!(json, status.as_str());
        }
    }

    #[test]
    fn stored_names_are_the_bound_ones() {
        use crate::domain::stored_names::bound_text;
        for status in TeamStatus::ALL {
            assert_eq!(bound_text(status), status.as_str());
            assert_eq!(
                serde_json::to_value(status).expect("serializes"),
                status.as_str()
            );
        }
        for status in OrganizationStatus::ALL {
            assert_eq!(bound_text(status), status.as_str());
        }
        for status in ModelGroupStatus::ALL {
            assert_eq!(bound_text(status), status.as_str());
        }
    }

    #[test]
    fn only_open_jobs_accept_calls() {
        let accepting: Vec<JobStatus> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.accepts_calls())
            .collect();
        assert_eq!(accepting, [JobStatus::Pending, JobStatus::InProgress]);
    }
}
