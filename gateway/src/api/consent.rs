//! `casegate.v1.ConsentService`: consent records.
//!
//! Who may do what: a jobseeker grants and withdraws their own consents (token `pid`); a
//! clinician, NAV counsellor or employment specialist records a grant or withdrawal with
//! evidence, for a consent that names their organisation; parties named in a consent (and the
//! subject) may read it. Anyone else gets `PERMISSION_DENIED` and learns nothing about the
//! record, not even whether it exists.
//!
//! Every look at a subject's consents is audited before it is answered: reads
//! (`consents_read`, with how many versions were shown) and dry-run decisions
//! (`disclosure_checked`, with the answer given). A refused `GetConsent` is audited without
//! the subject, so the caller's own audit trail does not tell it the consent exists.

use std::sync::Arc;

use casegate_audit::entry::{ConsentRead, ConsentsRead, DisclosureChecked, Entry, Event};
use casegate_consent::{
    Role, Vocabulary, decision,
    record::{ConsentId, ConsentRecord, Evidence, NewConsent, Timestamp},
};
use casegate_proto::v1::{
    CheckDisclosureRequest, CheckDisclosureResponse, GetConsentRequest, GetConsentResponse,
    GrantConsentRequest, GrantConsentResponse, ListConsentsRequest, ListConsentsResponse,
    WithdrawConsentRequest, WithdrawConsentResponse, consent_service_server::ConsentService,
};
use tonic::{Request, Response, Status};

use super::{
    audit::receipt,
    backend::{Shared, visible_consent},
};
use crate::{
    app::audit,
    app::principal::Principal,
    crypto::pseudonym::Pseudonymizer,
    edge::convert::{
        self, FieldError,
        consent::{
            PROFESSIONALS, check_request, consent_id, decision_to_wire, grant_request,
            record_to_wire,
        },
    },
    edge::status::{self, append_error},
};

/// Default and largest page of `ListConsents`.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 500;

#[derive(Debug, Clone)]
pub(crate) struct ConsentApi {
    backend: Shared,
    pseudonyms: Pseudonymizer,
    vocabulary: Arc<Vocabulary>,
    max_period_micros: i64,
}

impl ConsentApi {
    pub(crate) fn new(
        backend: Shared,
        pseudonyms: Pseudonymizer,
        vocabulary: Arc<Vocabulary>,
        max_period: std::time::Duration,
    ) -> Self {
        Self {
            backend,
            pseudonyms,
            vocabulary,
            max_period_micros: i64::try_from(max_period.as_micros()).unwrap_or(i64::MAX),
        }
    }

    /// The latest version of `id` if `principal` may see it; otherwise the same refusal
    /// whether or not it exists.
    async fn visible(
        &self,
        principal: &Principal,
        id: ConsentId,
        version: Option<u32>,
    ) -> Result<ConsentRecord, Status> {
        visible_consent(self.backend.consent(id, version).await, &|record| {
            may_read(principal, record)
        })
    }

    /// Records a read of consent records before it is answered.
    async fn audit_read(&self, entry: Entry) -> Result<(), Status> {
        self.backend.append(&entry).await.map_err(append_error)?;
        Ok(())
    }

    /// The entry of `read` by `principal` of the consents of the subject with `pseudonym`.
    fn read_entry(
        &self,
        principal: &Principal,
        pseudonym: Option<[u8; 32]>,
        read: ConsentRead,
    ) -> Entry {
        Entry::new(
            audit::now_micros(),
            Event::ConsentsRead(ConsentsRead {
                actor: audit::actor(principal),
                subject_pseudonym: pseudonym,
                read,
                login: principal.login.clone(),
            }),
        )
    }
}

fn now() -> Timestamp {
    Timestamp(audit::now_micros())
}

/// The subject themself, or someone acting for an organisation the version names.
fn may_read(principal: &Principal, record: &ConsentRecord) -> bool {
    match principal.role {
        Role::Jobseeker => principal.pid == Some(record.subject),
        Role::Admin => false,
        _ => record.names(principal.orgnr),
    }
}

/// The evidence a grant or withdrawal is recorded with, by who is acting.
fn recorded_evidence(
    principal: &Principal,
    sent: Option<Evidence>,
) -> Result<Option<Evidence>, Status> {
    match (principal.role, sent) {
        (Role::Jobseeker, None | Some(Evidence::Digital { .. })) => Ok(Some(Evidence::Digital {
            authenticated_as: principal.user_id.clone(),
        })),
        (Role::Jobseeker, Some(_)) => Err(FieldError::new(
            "evidence",
            "a jobseeker acting for themself records digital evidence only",
        )
        .into()),
        (_, None) => Err(FieldError::new(
            "evidence",
            "required when a professional records it (signed_form or verbal)",
        )
        .into()),
        (_, Some(Evidence::Digital { .. })) => Err(FieldError::new(
            "evidence.digital",
            "only the jobseeker's own grant is digital; use signed_form or verbal",
        )
        .into()),
        (_, Some(e)) => Ok(Some(e)),
    }
}

#[tonic::async_trait]
impl ConsentService for ConsentApi {
    async fn grant_consent(
        &self,
        request: Request<GrantConsentRequest>,
    ) -> Result<Response<GrantConsentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let mut allowed = vec![Role::Jobseeker];
        allowed.extend(PROFESSIONALS);
        principal.require_role(&allowed)?;
        let input = grant_request(request.get_ref(), &self.vocabulary, self.max_period_micros)?;
        if principal.role == Role::Jobseeker && principal.pid != Some(input.subject) {
            return Err(Status::permission_denied(
                "a jobseeker may grant consent only about themself (token pid)",
            ));
        }
        let evidence =
            recorded_evidence(principal, input.evidence.clone())?.unwrap_or(Evidence::Digital {
                authenticated_as: principal.user_id.clone(),
            });
        if principal.role != Role::Jobseeker
            && !input.provisions.iter().any(|p| p.names(principal.orgnr))
        {
            return Err(Status::permission_denied(
                "your organisation must be named in a consent it records",
            ));
        }
        let new = NewConsent {
            subject: input.subject,
            recorded_by: convert::consent::actor(principal),
            provisions: input.provisions,
            period: input.period,
            evidence,
        };
        let visible = |record: &ConsentRecord| may_read(principal, record);
        let (record, appended) = self
            .backend
            .grant(principal, new, input.supersedes, &visible)
            .await?;
        Ok(Response::new(GrantConsentResponse {
            consent: Some(record_to_wire(&record, now())),
            receipt: Some(receipt(self.backend.as_ref(), &appended).await?),
        }))
    }

    async fn get_consent(
        &self,
        request: Request<GetConsentRequest>,
    ) -> Result<Response<GetConsentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let GetConsentRequest {
            consent_id: id,
            version,
        } = request.get_ref();
        let id = consent_id("consent_id", id)?;
        let version = (*version != 0).then_some(*version);
        let record = match self.visible(principal, id, version).await {
            Ok(record) => record,
            Err(status) => {
                // The same entry whether the consent exists or not: no subject, no hash.
                let read = ConsentRead::GetRefused {
                    consent_id: id.to_string(),
                    reason: "not_visible".to_owned(),
                };
                self.audit_read(self.read_entry(principal, None, read))
                    .await?;
                return Err(status);
            }
        };
        let pseudonym = self.pseudonyms.pseudonym(&record.subject);
        let read = ConsentRead::Get(audit::consent_ref(&record));
        self.audit_read(self.read_entry(principal, Some(pseudonym), read))
            .await?;
        Ok(Response::new(GetConsentResponse {
            consent: Some(record_to_wire(&record, now())),
        }))
    }

    async fn list_consents(
        &self,
        request: Request<ListConsentsRequest>,
    ) -> Result<Response<ListConsentsResponse>, Status> {
        let principal = Principal::of(&request)?;
        let ListConsentsRequest {
            subject_id,
            include_history,
            page_size,
            page_token,
        } = request.get_ref();
        let subject = convert::subject("subject_id", subject_id)?;
        let refusal = match principal.role {
            Role::Admin => Some("role admin may not list consents"),
            Role::Jobseeker if principal.pid != Some(subject) => {
                Some("a jobseeker may list only their own consents (token pid)")
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            // A refused look at a jobseeker's consents is a look all the same.
            let pseudonym = self.pseudonyms.pseudonym(&subject);
            let read = ConsentRead::ListRefused("not_permitted".to_owned());
            self.audit_read(self.read_entry(principal, Some(pseudonym), read))
                .await?;
            return Err(Status::permission_denied(refusal));
        }
        let page = match *page_size as usize {
            0 => PAGE_DEFAULT,
            n => n.min(PAGE_MAX),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(parse_token(page_token)?)
        };
        let include_history = *include_history;
        let all = self
            .backend
            .consents_of(subject)
            .await
            .map_err(status::consent_store_error)?;
        let visible: Vec<&ConsentRecord> = all
            .iter()
            .filter(|r| may_read(principal, r))
            // Without history, only each consent's latest version (the last in key order).
            .filter(|r| {
                include_history || !all.iter().any(|o| o.id == r.id && o.version > r.version)
            })
            .filter(|r| after.is_none_or(|(id, v)| (r.id, r.version) > (id, v)))
            .collect();
        let shown = visible.len().min(page);
        let read = ConsentRead::List {
            shown: u32::try_from(shown).unwrap_or(u32::MAX),
        };
        let pseudonym = self.pseudonyms.pseudonym(&subject);
        self.audit_read(self.read_entry(principal, Some(pseudonym), read))
            .await?;
        let now = now();
        let consents = visible
            .iter()
            .take(page)
            .map(|r| record_to_wire(r, now))
            .collect();
        let next_page_token = match (visible.len() > page, visible.get(page.wrapping_sub(1))) {
            (true, Some(last)) => format!("{}:{}", last.id, last.version),
            _ => String::new(),
        };
        Ok(Response::new(ListConsentsResponse {
            consents,
            next_page_token,
        }))
    }

    async fn withdraw_consent(
        &self,
        request: Request<WithdrawConsentRequest>,
    ) -> Result<Response<WithdrawConsentResponse>, Status> {
        let principal = Principal::of(&request)?;
        let mut allowed = vec![Role::Jobseeker];
        allowed.extend(PROFESSIONALS);
        principal.require_role(&allowed)?;
        let WithdrawConsentRequest {
            consent_id: id,
            reason,
            evidence,
        } = request.get_ref();
        let id = consent_id("consent_id", id)?;
        let reason = if reason.is_empty() {
            None
        } else {
            Some(convert::text("reason", reason, 500)?)
        };
        let sent = evidence
            .as_ref()
            .map(|e| convert::consent::evidence("evidence", e))
            .transpose()?;
        let evidence = match principal.role {
            Role::Jobseeker => None,
            _ => recorded_evidence(principal, sent)?,
        };
        let visible = |record: &ConsentRecord| may_read(principal, record);
        let (withdrawn, purged_notes, appended) = self
            .backend
            .withdraw(principal, id, reason, evidence, &visible)
            .await?;
        Ok(Response::new(WithdrawConsentResponse {
            consent: Some(record_to_wire(&withdrawn, now())),
            purged_notes,
            receipt: Some(receipt(self.backend.as_ref(), &appended).await?),
        }))
    }

    async fn check_disclosure(
        &self,
        request: Request<CheckDisclosureRequest>,
    ) -> Result<Response<CheckDisclosureResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_role(&PROFESSIONALS)?;
        let (subject, disclosure) = check_request(request.get_ref(), principal)?;
        let decision = self
            .backend
            .decide(subject, disclosure.clone())
            .await
            .map_err(status::consent_store_error)?;
        crate::base::metrics::decision(match &decision {
            decision::Decision::Permit(_) => "permit",
            decision::Decision::Deny(d) => d.reason.code(),
        });
        let checked = DisclosureChecked {
            terms: audit::decision_terms(
                principal,
                self.pseudonyms.pseudonym(&subject),
                &disclosure,
            ),
            answer: audit::answer(&decision),
        };
        let entry = Entry::new(audit::now_micros(), Event::DisclosureChecked(checked));
        self.backend.append(&entry).await.map_err(append_error)?;
        Ok(Response::new(CheckDisclosureResponse {
            decision: Some(decision_to_wire(&decision)),
        }))
    }
}

fn parse_token(token: &str) -> Result<(ConsentId, u32), Status> {
    let bad = || {
        Status::from(FieldError::new(
            "page_token",
            "not a token from a previous page",
        ))
    };
    let (id, version) = token.split_once(':').ok_or_else(bad)?;
    Ok((
        id.parse().map_err(|_| bad())?,
        version.parse().map_err(|_| bad())?,
    ))
}
