//! `SummarizeAudit`: counts of entries per kind × reason × organisation × actor role × day
//! (and office hours, and optionally jobseeker), over what the officer may see, so patterns
//! show without reading entries. Audited like a query.

use std::collections::BTreeMap;

use casegate_audit::{
    entry::{Access, AuditQuery, EntryKind, SummaryFilter},
    index::Filter,
};
use casegate_consent::Role;
use casegate_proto::v1::{AuditCount, SummarizeAuditRequest, SummarizeAuditResponse};
use tonic::{Request, Response, Status};

use super::{AuditApi, DENIED, matching, queried};
use crate::{
    app::principal::Principal,
    base::oslo,
    edge::convert::{self, audit as convert_audit},
    edge::status::append_error,
};

/// The most entries one summary reads; a longer period must be split.
pub(super) const MAX_SUMMARY_ENTRIES: usize = 1_000_000;

/// One combination of the summary's dimensions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    day: String,
    kind: EntryKind,
    reason: String,
    orgnr: String,
    role: String,
    outside: bool,
    subject: Vec<u8>,
}

impl AuditApi {
    pub(super) async fn summarize(
        &self,
        request: Request<SummarizeAuditRequest>,
    ) -> Result<Response<SummarizeAuditResponse>, Status> {
        let principal = Principal::of(&request)?;
        if let Err(status) = principal.require_role(&[Role::PrivacyOfficer]) {
            self.refused(queried(principal, None, Access::Refused(DENIED.into())))
                .await?;
            return Err(status);
        }
        let SummarizeAuditRequest {
            from,
            until,
            kinds,
            reasons,
            by_subject,
        } = request.get_ref();
        let from = convert::timestamp("from", from.as_ref())?;
        let until = until
            .as_ref()
            .map(|t| convert::timestamp("until", Some(t)))
            .transpose()?;
        if until.is_some_and(|u| u <= from) {
            return Err(Status::invalid_argument("until: must be after from"));
        }
        let kinds = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| convert_audit::kind(&format!("kinds[{i}]"), *k))
            .collect::<Result<Vec<_>, _>>()?;
        let reasons = convert_audit::reason_codes("reasons", reasons)?;
        let scope = self.scope(principal);

        let filter = SummaryFilter {
            from: convert_audit::rfc3339(from.0),
            until: until.map(|u| convert_audit::rfc3339(u.0)),
            kinds: kinds.clone(),
            reasons: reasons.clone(),
        };
        let asked = AuditQuery::Summary(filter, scope.recorded());
        let entry = queried(principal, None, Access::Answered(asked));
        let appended = self.backend.append(&entry).await.map_err(append_error)?;
        let end = appended.checkpoint.checkpoint.size;
        let filter = Filter {
            visible_to: scope.visible_to(),
            kinds,
            reasons,
            from_micros: Some(from.0),
            until_micros: until.map(|u| u.0),
            ..Filter::default()
        };
        let by_subject = *by_subject;
        let mut counts: BTreeMap<Key, u64> = BTreeMap::new();
        let mut entries = 0u64;
        matching(
            self.backend.as_ref(),
            filter,
            0,
            end,
            MAX_SUMMARY_ENTRIES + 1,
            |_, entry, _, _| {
                let actor = entry.actor();
                let key = Key {
                    day: oslo::day(entry.time_micros),
                    kind: entry.kind(),
                    reason: entry.reason().unwrap_or_default().to_owned(),
                    orgnr: entry
                        .sender_orgnr()
                        .or_else(|| actor.map(|a| a.orgnr.as_str()))
                        .unwrap_or_default()
                        .to_owned(),
                    role: actor.map(|a| a.role.clone()).unwrap_or_default(),
                    outside: oslo::outside_office_hours(entry.time_micros),
                    subject: if by_subject {
                        entry
                            .subject_pseudonym()
                            .map(|p| p.to_vec())
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                };
                *counts.entry(key).or_default() += 1;
                entries += 1;
                Ok(())
            },
        )
        .await?;
        if entries > MAX_SUMMARY_ENTRIES as u64 {
            return Err(Status::resource_exhausted(format!(
                "the period holds more than {MAX_SUMMARY_ENTRIES} matching entries; summarise a \
                 shorter period"
            )));
        }
        let counts = counts
            .into_iter()
            .map(|(key, count)| AuditCount {
                kind: convert_audit::kind_to_wire(key.kind),
                reason: key.reason,
                orgnr: key.orgnr,
                actor_role: key.role.parse::<Role>().map_or(0, convert::role_to_wire),
                day: key.day,
                outside_office_hours: key.outside,
                subject_pseudonym: key.subject,
                count,
            })
            .collect();
        Ok(Response::new(SummarizeAuditResponse {
            counts,
            entries,
            tree_size: end,
        }))
    }
}
