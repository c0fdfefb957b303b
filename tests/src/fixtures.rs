//! Request fixtures shared by tests and the load generator.

use casegate_consent::SubjectId;
use casegate_proto::v1::{GrantConsentRequest, Party, Period, Provision};

use crate::TestGateway;

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A consent by `subject` that `sender` may send `category` to `recipient` (test organisation
/// slugs, every role) for `purpose`, from a minute ago for a day.
pub fn consent(
    gw: &TestGateway,
    subject: &SubjectId,
    sender: &str,
    recipient: &str,
    category: &str,
    purpose: &str,
) -> GrantConsentRequest {
    consent_between(
        subject,
        &gw.org(sender).orgnr,
        &gw.org(recipient).orgnr,
        category,
        purpose,
    )
}

/// [`consent`] between organisation numbers.
pub fn consent_between(
    subject: &SubjectId,
    sender_orgnr: &str,
    recipient_orgnr: &str,
    category: &str,
    purpose: &str,
) -> GrantConsentRequest {
    let now = now_seconds();
    let party = |orgnr: &str| Party {
        orgnr: orgnr.to_owned(),
        roles: vec![],
    };
    GrantConsentRequest {
        subject_id: subject.expose(),
        provisions: vec![Provision {
            senders: vec![party(sender_orgnr)],
            recipients: vec![party(recipient_orgnr)],
            categories: vec![category.into()],
            purposes: vec![purpose.into()],
        }],
        period: Some(Period {
            start: Some(prost_types::Timestamp {
                seconds: now - 60,
                nanos: 0,
            }),
            end: Some(prost_types::Timestamp {
                seconds: now + 86_400,
                nanos: 0,
            }),
        }),
        ..Default::default()
    }
}
