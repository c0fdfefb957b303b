use super::*;

/// The final states must agree both ways; active and expired may differ by the moment
/// between the report's entry and the gateway's answer.
#[test]
fn stated_and_verified_states_must_agree_on_the_final_ones() {
    use ViewStatus as V;
    use v1::ConsentStatus as S;
    let agree = [
        (S::Active, V::Active),
        (S::Expired, V::Active),
        (S::Active, V::Expired),
        (S::Expired, V::Expired),
        (S::Withdrawn, V::Withdrawn),
        (S::Superseded, V::Superseded),
    ];
    for (stated, derived) in agree {
        assert_eq!(status_disagrees(stated as i32, derived), None, "{stated:?}");
    }
    let disagree = [
        (S::Withdrawn, V::Active),
        (S::Withdrawn, V::Superseded),
        (S::Superseded, V::Withdrawn),
        (S::Active, V::Withdrawn),
        (S::Expired, V::Superseded),
        (S::Unspecified, V::Active),
    ];
    for (stated, derived) in disagree {
        assert!(
            status_disagrees(stated as i32, derived).is_some(),
            "{stated:?} / {derived:?}"
        );
    }
    assert!(status_disagrees(99, ViewStatus::Active).is_some());
}
