//! `chatctl token`: a dev JWT with the claims asked for, which an ingress
//! configured with the same secret accepts.

use crate::cli::Cli;
use e2e::{Client, SECRET, Stack};

#[tokio::test]
async fn token_mints_a_jwt_the_ingress_accepts() {
    let stack = Stack::builder().workers(0).start().await;
    let cli = Cli::for_stack(&stack);
    let out = cli
        .run(&[
            "token", "--sub", "alice", "--room", "team:*", "--room", "lobby", "--sid", "s-9",
            "--ttl", "10m",
        ])
        .await;
    out.ok();
    let jwt = out.stdout().trim().to_owned();
    // The secret came from CHAT_JWT_SECRET, like the ingress's.
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims = ["exp", "sub"].iter().map(|s| (*s).to_owned()).collect();
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &v,
    )
    .expect("signed with the secret")
    .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["rooms"], serde_json::json!(["team:*", "lobby"]));
    assert_eq!(claims["sid"], "s-9");
    let ttl = claims["exp"].as_u64().expect("exp") - e2e::now();
    assert!((590..=600).contains(&ttl), "exp about 10 min ahead: {ttl}");

    let mut c = Client::connect_with_header(&stack.ws_url(0), Some(&jwt)).await;
    let ready = c.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["user"], "alice");

    let out = cli
        .run(&["token", "--sub", "bob", "--ttl", "soonish"])
        .await;
    out.refused();
    assert!(out.stderr().contains("soonish"), "{}", out.stderr());
}

#[tokio::test]
async fn token_refuses_a_ttl_past_100_years_without_panicking() {
    let cli = Cli::with_env(&[("CHAT_JWT_SECRET", SECRET)]);
    for ttl in ["584542046090years", "101years"] {
        let out = cli.run(&["token", "--sub", "bob", "--ttl", ttl]).await;
        out.refused();
        assert!(
            out.stderr()
                .contains("--ttl is too long: at most 100 years"),
            "{ttl}: {}",
            out.stderr()
        );
    }
    let out = cli
        .run(&["token", "--sub", "bob", "--ttl", "100years"])
        .await;
    out.ok();
    let jwt = out.stdout().trim().to_owned();
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&jwt)
        .expect("a JWT")
        .claims;
    let ttl = claims["exp"].as_u64().expect("exp") - e2e::now();
    assert!(ttl.abs_diff(3_155_760_000) <= 5, "{ttl}");
}
