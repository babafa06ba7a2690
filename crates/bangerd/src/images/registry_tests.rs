use super::*;

#[test]
fn bearer_challenges_parse() {
    let c = parse_challenge(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
    )
    .unwrap();
    assert_eq!(c.realm, "https://auth.docker.io/token");
    assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
    assert_eq!(c.scope.as_deref(), Some("repository:library/debian:pull"));
    // Commas inside quotes, unquoted values, no scope.
    let c = parse_challenge(r#"Bearer realm="https://x/t?a=1,b=2", service=svc"#).unwrap();
    assert_eq!(c.realm, "https://x/t?a=1,b=2");
    assert_eq!(c.service.as_deref(), Some("svc"));
    assert_eq!(c.scope, None);
    assert!(parse_challenge(r#"Basic realm="x""#).is_none());
    assert!(
        parse_challenge("Bearer service=\"s\"").is_none(),
        "no realm"
    );
    assert_eq!(query_escape("repository:a/b:pull"), "repository:a/b:pull");
    assert_eq!(query_escape("a b&c"), "a%20b%26c");
}
