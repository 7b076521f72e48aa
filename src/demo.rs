//! `serve --demo`: one tenant per api with a fixed, documented key and a few realistic sessions.
//! Idempotent: running it again changes nothing that exists (not even sessions you have edited).

use crate::auth;
use crate::service::{AdminError, Origin, Service};
use crate::vendor::ApiId;

/// One api's demo: the tenant, its key, and the ids of its sessions.
#[derive(Debug, Clone)]
pub struct Demo {
    pub api: ApiId,
    pub tenant: String,
    pub key: String,
    pub session_ids: Vec<String>,
}

/// Creates whatever of the demo data is missing.
pub async fn seed(service: &Service) -> Result<Vec<Demo>, AdminError> {
    let mut out = Vec::new();
    for api in ApiId::ALL {
        let profile = api.profile();
        let tenant = profile.demo_tenant().to_owned();
        match service.create_tenant(api, Some(tenant.clone())).await {
            Ok(_) | Err(AdminError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let key = auth::demo_key(api);
        service
            .ensure_key(api, &tenant, &format!("key_demo_{api}"), &key)
            .await?;
        let mut ids = Vec::new();
        for doc in profile.demo_sessions() {
            let id = doc["id"]
                .as_str()
                .expect("demo sessions have ids")
                .to_owned();
            match service
                .create_session(api, &tenant, doc, Origin::Client)
                .await
            {
                Ok(_) | Err(AdminError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            ids.push(id);
        }
        out.push(Demo {
            api,
            tenant,
            key: key.expose().to_owned(),
            session_ids: ids,
        });
    }
    Ok(out)
}

/// A working curl line for the demo's first session of `demo.api`, served at `base`.
pub fn curl_line(service: &Service, demo: &Demo, base: &str) -> String {
    let contract = service.contract(demo.api);
    let path = contract
        .route()
        .replace(&format!("{{{}}}", contract.id_param), &demo.session_ids[0]);
    let header = match &contract.credential {
        crate::spec::Credential::Header(name) => format!("{name}: {}", demo.key),
        crate::spec::Credential::Bearer => format!("Authorization: Bearer {}", demo.key),
    };
    format!("curl -s {base}/{}{path} -H '{header}'", demo.api)
}

#[cfg(test)]
mod tests {
    use crate::vendor::ApiId;

    /// The README's curl lines name the demo sessions; they must stay the generated ones.
    #[test]
    fn readme_names_the_demo_sessions() {
        let readme = include_str!("../README.md");
        for api in ApiId::ALL {
            let first = &api.profile().demo_sessions()[0];
            let id = first["id"].as_str().unwrap();
            assert!(
                readme.contains(id),
                "README.md lacks the {api} demo session {id}"
            );
        }
    }
}
