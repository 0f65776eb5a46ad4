//! The public corpus (`tests/corpus/*.nix`, at least 25 layouts from public NixOS
//! configurations, not disko's `example/`): kctl's levels 1-3 agree with disko's own
//! CLI-style verdict on every file, except where the file's header states kctl is stricter,
//! and every finding kctl reports on them names a line of the file.

use kcore_disko::eval::{ValidateError, validate_file};
use kcore_disko::reference::Verdict;

use super::corpus_cases::{Judgement, judge, load};
use super::{deep_inputs, evaluator};

#[tokio::test]
async fn corpus_agrees_with_disko() {
    let (Some(ev), Some(deep)) = (evaluator(), deep_inputs()) else {
        return;
    };
    let cases = load().unwrap();
    assert!(cases.len() >= 25, "only {} layouts", cases.len());
    let mut wrong = Vec::new();
    let (mut agree, mut stricter) = (0, 0);
    for case in &cases {
        assert!(
            case.source.starts_with("github.com/"),
            "{}: the source must name the repository: {}",
            case.name,
            case.source
        );
        let disko = ev.disko_cli_verdict(&case.path, &deep).await.unwrap();
        let kctl = validate_file(&ev, &case.path, Some(&deep)).await;
        match judge(case, &disko, &kctl) {
            Judgement::Agree => agree += 1,
            Judgement::StricterAsStated => stricter += 1,
            Judgement::Disagree(why) => wrong.push(format!("{}: {why}", case.name)),
        }
        // A refusal names a line of the user's file, whichever level found it.
        if let Err(ValidateError::Invalid(findings)) = &kctl {
            let file = std::fs::canonicalize(&case.path).unwrap();
            let file = file.display().to_string();
            for f in findings {
                let at = f.position.as_deref().unwrap_or(f.location.as_str());
                assert!(
                    at.starts_with(&file),
                    "{}: finding has no position in the file: {f}",
                    case.name
                );
            }
        }
        if let Verdict::Refused(f) = &disko {
            eprintln!("{}: disko refuses: {f}", case.name);
        }
    }
    eprintln!(
        "corpus: {} layouts, {agree} agree with disko, {stricter} refused by kctl as stated, {} disagree",
        cases.len(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
