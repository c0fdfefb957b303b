//! `casegate.v1` disclosure messages ↔ the domain.

use casegate_consent::{Category, OrgNumber, Purpose, Role, SubjectId, record::Timestamp};
use casegate_proto::v1;

use super::{FieldError, Parsed, optional_role, subject, text, timestamp};
use crate::app::notes::Approval;

/// A parsed `DiscloseRequest`.
#[derive(Debug, Clone)]
pub(crate) struct DiscloseInput {
    pub request_id: String,
    pub subject: SubjectId,
    pub recipient_org: OrgNumber,
    pub recipient_role: Option<Role>,
    pub category: Category,
    pub purpose: Purpose,
    pub title: String,
    pub body: Vec<u8>,
    pub content_type: String,
    pub approval: Option<Approval>,
}

impl DiscloseInput {
    /// The request's fingerprint (SHA-256, 32 bytes) over every field in a fixed encoding —
    /// each field as a u64 big-endian length and its bytes, the body as its SHA-256
    /// `content_sha256` — after the label `casegate.disclose.v2`: the same request gives the
    /// same value, any change gives another (idempotency).
    pub(crate) fn fingerprint(&self, content_sha256: &[u8; 32]) -> [u8; 32] {
        self.digest(Some(b"casegate.disclose.v2"), content_sha256)
    }

    /// The fingerprint notes stored before [`Self::fingerprint`] hold: the same fields with
    /// the body whole and no label. Computed only when a repeated request id's fingerprint
    /// does not match the current one.
    pub(crate) fn fingerprint_before_v2(&self) -> [u8; 32] {
        self.digest(None, &self.body)
    }

    fn digest(&self, label: Option<&[u8]>, body: &[u8]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        if let Some(label) = label {
            field(label);
        }
        field(self.request_id.as_bytes());
        field(self.subject.expose().as_bytes());
        field(self.recipient_org.to_string().as_bytes());
        field(self.recipient_role.map_or("", |r| r.as_str()).as_bytes());
        field(self.category.as_str().as_bytes());
        field(self.purpose.as_str().as_bytes());
        field(self.title.as_bytes());
        field(body);
        field(self.content_type.as_bytes());
        match &self.approval {
            None => field(b""),
            Some(a) => {
                field(a.hpr_number.as_bytes());
                field(&a.approved_at.0.to_be_bytes());
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

fn term<T: std::str::FromStr>(field: &str, value: &str) -> Parsed<T>
where
    T::Err: std::fmt::Display,
{
    if value.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    value.parse().map_err(|e| FieldError::new(field, e))
}

pub(crate) fn disclose_request(
    wire: &v1::DiscloseRequest,
    max_body_bytes: usize,
) -> Parsed<DiscloseInput> {
    let v1::DiscloseRequest {
        request_id,
        subject_id,
        recipient_orgnr,
        recipient_role,
        category,
        purpose,
        title,
        body,
        content_type,
        approval,
    } = wire;
    let request_id = text("request_id", request_id, 128)?;
    let subject = subject("subject_id", subject_id)?;
    if recipient_orgnr.is_empty() {
        return Err(FieldError::new("recipient_orgnr", "required"));
    }
    let recipient_org = recipient_orgnr
        .parse()
        .map_err(|e| FieldError::new("recipient_orgnr", e))?;
    let recipient_role = optional_role("recipient_role", *recipient_role)?;
    let category = term("category", category)?;
    let purpose = term("purpose", purpose)?;
    let title = text("title", title, 200)?;
    if body.is_empty() {
        return Err(FieldError::new("body", "required"));
    }
    if body.len() > max_body_bytes {
        return Err(FieldError::new(
            "body",
            format!(
                "{} bytes is over the limit of {max_body_bytes} bytes",
                body.len()
            ),
        ));
    }
    let content_type = text("content_type", content_type, 100)?;
    let approval = approval
        .as_ref()
        .map(|a| {
            let v1::ApprovalAttestation {
                hpr_number,
                approved_at,
            } = a;
            if hpr_number.is_empty()
                || hpr_number.len() > 9
                || !hpr_number.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(FieldError::new(
                    "approval.hpr_number",
                    "an HPR number is 1-9 digits",
                ));
            }
            Ok(Approval {
                hpr_number: hpr_number.clone(),
                approved_at: timestamp("approval.approved_at", approved_at.as_ref())?,
            })
        })
        .transpose()?;
    Ok(DiscloseInput {
        request_id,
        subject,
        recipient_org,
        recipient_role,
        category,
        purpose,
        title,
        body: body.clone(),
        content_type,
        approval,
    })
}

/// The time now, for notes.
pub(crate) fn now() -> Timestamp {
    Timestamp(crate::app::audit::now_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> DiscloseInput {
        DiscloseInput {
            request_id: "request-1".into(),
            subject: SubjectId::synthetic_all().next().expect("subject"),
            recipient_org: "910000071".parse().expect("orgnr"),
            recipient_role: Some(Role::EmploymentSpecialist),
            category: "job_progress".parse().expect("category"),
            purpose: "ips_follow_up".parse().expect("purpose"),
            title: "Progress".into(),
            body: b"worked three days".to_vec(),
            content_type: "text/plain".into(),
            approval: Some(Approval {
                hpr_number: "123456".into(),
                approved_at: Timestamp(900),
            }),
        }
    }

    fn hex(bytes: [u8; 32]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        out
    }

    #[test]
    fn the_fingerprint_before_v2_is_the_one_notes_stored_then_hold() {
        // Computed for this request by the gateway before the v2 fingerprint (e932ca0).
        assert_eq!(
            hex(input().fingerprint_before_v2()),
            "ed5928c8ca2da9575cfc601306938dd89c78eb8d5e7b4d0805b40bd5b639b3a1"
        );
    }

    #[test]
    fn every_field_changes_the_fingerprint_and_the_body_counts_by_its_hash() {
        let base = input();
        let of = |i: &DiscloseInput| i.fingerprint(&sha256(&i.body));
        let fingerprint = of(&base);
        assert_ne!(fingerprint, base.fingerprint_before_v2());
        let changes: [fn(&mut DiscloseInput); 10] = [
            |i| i.request_id.push('x'),
            |i| i.subject = SubjectId::synthetic_all().nth(1).expect("subject"),
            |i| i.recipient_org = "910000063".parse().expect("orgnr"),
            |i| i.recipient_role = None,
            |i| i.category = "work_functioning".parse().expect("category"),
            |i| i.purpose = "benefit_planning".parse().expect("purpose"),
            |i| i.title.push('x'),
            |i| i.body.push(b'x'),
            |i| i.content_type.push('x'),
            |i| i.approval = None,
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(of(&changed), fingerprint, "change {n}");
        }
        assert_eq!(of(&base.clone()), fingerprint);
    }
}
