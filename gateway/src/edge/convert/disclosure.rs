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
    /// SHA-256 over every field, in a fixed encoding: the same request gives the same value,
    /// any change gives another (idempotency).
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut field = |bytes: &[u8]| {
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        field(self.request_id.as_bytes());
        field(self.subject.expose().as_bytes());
        field(self.recipient_org.to_string().as_bytes());
        field(self.recipient_role.map_or("", |r| r.as_str()).as_bytes());
        field(self.category.as_str().as_bytes());
        field(self.purpose.as_str().as_bytes());
        field(self.title.as_bytes());
        field(&self.body);
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
