//! Version 1's `detail` texts: how the facts of an event beyond the fixed fields are written
//! (a login after the text, a disclosure's role and approval, an audit query's filter and
//! scope), and read back. [`super::fit`] checks that what is read writes the same text again.

use super::{
    EntryKind,
    event::{AuditQuery, Login, QueryFilter, Scope, SummaryFilter},
    fit::need,
};

// === writing ===

/// `text` followed by the login, if any (either alone if the other is absent).
pub(super) fn with_login(text: Option<String>, login: Option<&Login>) -> Option<String> {
    let login = login.map(|l| match &l.acr {
        Some(acr) => format!("login={} acr={acr}", l.idp),
        None => format!("login={}", l.idp),
    });
    match (text, login) {
        (Some(text), Some(login)) => Some(format!("{text} {login}")),
        (text, login) => text.or(login),
    }
}

pub(super) fn disclosure_detail(
    recipient_role: Option<&str>,
    approval_attested: bool,
) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(role) = recipient_role {
        parts.push(format!("recipient_role={role}"));
    }
    if approval_attested {
        parts.push("approval=attested".to_owned());
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

pub(super) fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::All => "scope=all".to_owned(),
        Scope::Org(org) => format!("scope=org:{org}"),
    }
}

pub(super) fn kinds_text(kinds: &[EntryKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    names.join(",")
}

pub(super) fn describe(filter: &QueryFilter) -> String {
    let QueryFilter {
        subject,
        orgnr,
        from,
        until,
        kinds,
        reasons,
        start_index,
        limit,
    } = filter;
    let mut parts = Vec::new();
    if *subject {
        parts.push("subject=<pseudonym>".to_owned());
    }
    if let Some(org) = orgnr {
        parts.push(format!("orgnr={org}"));
    }
    if let Some(t) = from {
        parts.push(format!("from={t}"));
    }
    if let Some(t) = until {
        parts.push(format!("until={t}"));
    }
    if !kinds.is_empty() {
        parts.push(format!("kinds={}", kinds_text(kinds)));
    }
    if !reasons.is_empty() {
        parts.push(format!("reasons={}", reasons.join(",")));
    }
    parts.push(format!("start_index={start_index}"));
    parts.push(format!("limit={limit}"));
    parts.join(" ")
}

pub(super) fn summary(filter: &SummaryFilter) -> String {
    let SummaryFilter {
        from,
        until,
        kinds,
        reasons,
    } = filter;
    let mut text = format!("summary from={from}");
    if let Some(until) = until {
        text.push_str(&format!(" until={until}"));
    }
    if !kinds.is_empty() {
        text.push_str(&format!(" kinds={}", kinds_text(kinds)));
    }
    if !reasons.is_empty() {
        text.push_str(&format!(" reasons={}", reasons.join(",")));
    }
    text
}

// === reading ===

/// Splits the login off the end of a `detail`: (what comes before it, the login).
pub(super) fn split_login(detail: Option<&str>) -> (Option<&str>, Option<Login>) {
    let Some(detail) = detail else {
        return (None, None);
    };
    let mut words: Vec<&str> = detail.split(' ').collect();
    let acr = match words.last().and_then(|w| w.strip_prefix("acr=")) {
        Some(acr) if words.len() >= 2 && words[words.len() - 2].starts_with("login=") => {
            words.pop();
            Some(acr.to_owned())
        }
        _ => None,
    };
    let login = match words.last().and_then(|w| w.strip_prefix("login=")) {
        Some(idp) => {
            let idp = idp.to_owned();
            words.pop();
            Some(Login { idp, acr })
        }
        // An `acr=` word without a login before it is part of the text.
        None => return (Some(detail), None),
    };
    let rest = words.len();
    if rest == 0 {
        return (None, login);
    }
    // What precedes the login, as a slice of `detail` (the words joined by single spaces).
    let before: usize = words.iter().map(|w| w.len()).sum::<usize>() + rest - 1;
    (Some(&detail[..before]), login)
}

pub(super) fn only_login(detail: Option<&str>) -> Result<Option<Login>, String> {
    match split_login(detail) {
        (None, login) => Ok(login),
        (Some(_), _) => Err("its detail is not a login".into()),
    }
}

pub(super) fn read_disclosure_detail(
    detail: Option<&str>,
) -> Result<(Option<String>, bool), String> {
    let (mut role, mut approval) = (None, false);
    let Some(detail) = detail else {
        return Ok((role, approval));
    };
    for part in detail.split(' ') {
        match part.split_once('=') {
            Some(("recipient_role", r)) if role.is_none() => role = Some(r.to_owned()),
            Some(("approval", "attested")) => approval = true,
            _ => return Err(format!("its detail has an unknown part {part:?}")),
        }
    }
    Ok((role, approval))
}

pub(super) fn read_scope(text: &str) -> Result<Scope, String> {
    match text {
        "scope=all" => Ok(Scope::All),
        _ => text
            .strip_prefix("scope=org:")
            .map(|org| Scope::Org(org.to_owned()))
            .ok_or_else(|| format!("{text:?} is not a scope")),
    }
}

pub(super) fn read_kinds(text: &str) -> Result<Vec<EntryKind>, String> {
    text.split(',')
        .map(|name| {
            EntryKind::ALL
                .into_iter()
                .find(|k| k.as_str() == name)
                .ok_or_else(|| format!("unknown kind {name:?}"))
        })
        .collect()
}

pub(super) fn read_list(text: &str) -> Vec<String> {
    text.split(',').map(str::to_owned).collect()
}

/// Reads `<filter> <scope>` of an answered audit query or summary.
pub(super) fn read_audit_query(body: &str) -> Result<AuditQuery, String> {
    let (filter, scope) = body
        .rsplit_once(' ')
        .ok_or("its detail has no filter and scope")?;
    let scope = read_scope(scope)?;
    let mut words = filter.split(' ').peekable();
    if words.peek() == Some(&"summary") {
        words.next();
        let mut from = None;
        let mut out = SummaryFilter {
            from: String::new(),
            until: None,
            kinds: Vec::new(),
            reasons: Vec::new(),
        };
        for word in words {
            match word.split_once('=') {
                Some(("from", t)) => from = Some(t.to_owned()),
                Some(("until", t)) => out.until = Some(t.to_owned()),
                Some(("kinds", k)) => out.kinds = read_kinds(k)?,
                Some(("reasons", r)) => out.reasons = read_list(r),
                _ => return Err(format!("unknown summary filter part {word:?}")),
            }
        }
        out.from = need(from, "summary start")?;
        return Ok(AuditQuery::Summary(out, scope));
    }
    let mut out = QueryFilter {
        subject: false,
        orgnr: None,
        from: None,
        until: None,
        kinds: Vec::new(),
        reasons: Vec::new(),
        start_index: 0,
        limit: 0,
    };
    let (mut start, mut limit) = (None, None);
    for word in words {
        match word.split_once('=') {
            Some(("subject", "<pseudonym>")) => out.subject = true,
            Some(("orgnr", o)) => out.orgnr = Some(o.to_owned()),
            Some(("from", t)) => out.from = Some(t.to_owned()),
            Some(("until", t)) => out.until = Some(t.to_owned()),
            Some(("kinds", k)) => out.kinds = read_kinds(k)?,
            Some(("reasons", r)) => out.reasons = read_list(r),
            Some(("start_index", n)) => start = n.parse().ok(),
            Some(("limit", n)) => limit = n.parse().ok(),
            _ => return Err(format!("unknown query filter part {word:?}")),
        }
    }
    out.start_index = need(start, "start index")?;
    out.limit = need(limit, "limit")?;
    Ok(AuditQuery::Entries(out, scope))
}
