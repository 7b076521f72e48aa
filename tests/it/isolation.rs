//! Tenant isolation, randomized: many tenants, keys and sessions per api, created in a shuffled
//! order, then every (key, session) pair of an api is tried. A key reads exactly its own tenant's
//! sessions; another tenant's session answers byte-for-byte like an unknown id; a key of another
//! api reads nothing. The seed is printed; `IT_SEED=<n>` replays a run.

use bytes::Bytes;
use rand::prelude::*;
use rand::rngs::StdRng;
use sessiond::ApiId;

use crate::common::{Reply, TestServer, fixtures};

per_backend!(every_key_reads_exactly_its_own_tenants_sessions,);

const TENANTS: usize = 6;
const KEYS: usize = 2;
const SESSIONS: usize = 4;

struct Tenant {
    api: ApiId,
    keys: Vec<String>,
    sessions: Vec<(String, Bytes)>,
}

fn seed() -> u64 {
    let seed = match std::env::var("IT_SEED") {
        Ok(s) => s.parse().expect("IT_SEED is a u64"),
        Err(_) => rand::rng().random(),
    };
    println!("tenant isolation: seed {seed} (replay with IT_SEED={seed})");
    seed
}

/// What every key of `api` gets for an id that does not exist.
async fn unknown_answer(server: &TestServer, tenants: &[Tenant], api: ApiId) -> Reply {
    let key = &tenants.iter().find(|t| t.api == api).unwrap().keys[0];
    server
        .public_get(api, &api.profile().new_session_id(), Some(key))
        .await
}

async fn every_key_reads_exactly_its_own_tenants_sessions() {
    let mut rng = StdRng::seed_from_u64(seed());
    let server = TestServer::start().await;

    // Tenants and keys of all apis, in a shuffled order.
    let mut plan: Vec<ApiId> = ApiId::ALL
        .iter()
        .flat_map(|api| std::iter::repeat_n(*api, TENANTS))
        .collect();
    plan.shuffle(&mut rng);
    let mut tenants = Vec::new();
    for api in plan {
        let id = server.create_tenant(api).await;
        let mut keys = Vec::new();
        for _ in 0..KEYS {
            keys.push(server.create_key(api, &id).await.1);
        }
        tenants.push((
            id,
            Tenant {
                api,
                keys,
                sessions: Vec::new(),
            },
        ));
    }
    // Sessions, interleaved across tenants and apis.
    let mut writes: Vec<usize> = (0..tenants.len())
        .flat_map(|t| std::iter::repeat_n(t, SESSIONS))
        .collect();
    writes.shuffle(&mut rng);
    for t in writes {
        let (id, tenant) = &mut tenants[t];
        let doc = fixtures::varied(tenant.api, &mut rng);
        let created = server.new_session(tenant.api, id, &doc).await;
        tenant.sessions.push(created);
    }
    let tenants: Vec<Tenant> = tenants.into_iter().map(|(_, t)| t).collect();

    let mut checked = 0;
    for api in ApiId::ALL {
        let unknown = unknown_answer(&server, &tenants, api).await.observable();
        assert_eq!(unknown.0, 404, "{api}: unknown id");
        let of_api: Vec<&Tenant> = tenants.iter().filter(|t| t.api == api).collect();
        let mut pairs: Vec<(bool, &String, &(String, Bytes))> = Vec::new();
        for reader in &of_api {
            for key in &reader.keys {
                for owner in &of_api {
                    let own = std::ptr::eq(*owner, *reader);
                    pairs.extend(owner.sessions.iter().map(|s| (own, key, s)));
                }
            }
        }
        pairs.shuffle(&mut rng);
        for (own, key, (id, body)) in pairs {
            let reply = server.public_get(api, id, Some(key)).await;
            if own {
                assert_eq!(
                    reply.status,
                    200,
                    "{api}: own session {id}: {}",
                    reply.text()
                );
                assert_eq!(&reply.body, body, "{api}: own session {id} changed");
            } else {
                assert_eq!(
                    reply.observable(),
                    unknown,
                    "{api}: another tenant's session {id} must answer like an unknown id"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        ApiId::ALL.len() * (TENANTS * KEYS) * (TENANTS * SESSIONS)
    );

    // Keys of one api read nothing of another, whatever the id.
    for _ in 0..50 {
        let reader = tenants.choose(&mut rng).unwrap();
        let owner = tenants
            .iter()
            .filter(|t| t.api != reader.api)
            .choose(&mut rng)
            .unwrap();
        let (id, _) = owner.sessions.choose(&mut rng).unwrap();
        let key = reader.keys.choose(&mut rng).unwrap();
        let reply = server.public_get(owner.api, id, Some(key)).await;
        assert_eq!(
            reply.status,
            401,
            "{}: a key of {} got {}",
            owner.api,
            reader.api,
            reply.text()
        );
    }
}
