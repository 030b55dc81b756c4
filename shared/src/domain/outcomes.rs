//! How money held for work and upstream attempts end, as stored in PostgreSQL: a job's credit
//! hold, a request's spend record and where its cost came from, and each attempt at a model.

use crate::domain::stored_names::stored_names;

/// The credit a job holds from its creation: `held` while the job is open, then `charged`
/// (the job completed with a successful call) or `released` (given back to the team).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CreditHold {
    Held,
    Charged,
    Released,
}

stored_names!(CreditHold {
    Held => "held",
    Charged => "charged",
    Released => "released",
});

/// A spend record of the OpenAI-compatible path: `reserved` while its request runs (left only
/// by API processes of earlier versions), then `recorded` with what the request cost, or
/// `released` when it failed and cost nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SpendStatus {
    Reserved,
    Recorded,
    Released,
}

stored_names!(SpendStatus {
    Reserved => "reserved",
    Recorded => "recorded",
    Released => "released",
});

/// Where a recorded cost came from: the upstream's cost header, the model's configured price,
/// or the default price of a model without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CostSource {
    Header,
    /// The usual source, and what a request that cost nothing is recorded with.
    #[default]
    PriceTable,
    DefaultPrice,
}

stored_names!(CostSource {
    Header => "header",
    PriceTable => "price_table",
    DefaultPrice => "default_price",
});

/// How one attempt of a call at one model ended: it `succeeded`; it failed and the same model
/// is tried again (`retry`) or the next model of the group (`fallback`); the model was not
/// tried, cooling down after repeated failures (`skipped`); or it failed for good (`fatal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Retry,
    Fallback,
    Skipped,
    Fatal,
}

stored_names!(AttemptOutcome {
    Succeeded => "succeeded",
    Retry => "retry",
    Fallback => "fallback",
    Skipped => "skipped",
    Fatal => "fatal",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stored_names::bound_text;

    #[test]
    fn stored_names_are_the_bound_ones() {
        for hold in CreditHold::ALL {
            assert_eq!(bound_text(hold), hold.as_str());
        }
        for status in SpendStatus::ALL {
            assert_eq!(bound_text(status), status.as_str());
        }
        for source in CostSource::ALL {
            assert_eq!(bound_text(source), source.as_str());
        }
        for outcome in AttemptOutcome::ALL {
            assert_eq!(bound_text(outcome), outcome.as_str());
        }
    }
}
