//! A recording [`NetOps`] fake: remembers every request, keeps a tiny model
//! of which interfaces exist and are banger's, and fails on demand.

use super::{Link, NetError, NetOps, Owner, Route4, MANAGED_ALIAS};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// One request made of the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetRequest {
    EnsureBridge {
        name: String,
        addr: Ipv4Addr,
        prefix: u8,
    },
    CreateTap {
        name: String,
        bridge: String,
        owner: Owner,
    },
    DeleteTap {
        name: String,
    },
    DeleteBridge {
        name: String,
    },
    DeleteManaged {
        name: String,
    },
}

/// Records requests; models links as name → (kind, managed).
#[derive(Debug, Default)]
pub struct RecordingNet {
    calls: Mutex<Vec<NetRequest>>,
    links: Mutex<BTreeMap<String, (&'static str, bool)>>,
    routes: Mutex<Vec<Route4>>,
}

impl RecordingNet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pretend a link exists (`managed`: carries banger's alias).
    pub fn with_link(self, name: &str, kind: &'static str, managed: bool) -> Self {
        self.links
            .lock()
            .unwrap()
            .insert(name.into(), (kind, managed));
        self
    }

    pub fn with_routes(self, routes: Vec<Route4>) -> Self {
        *self.routes.lock().unwrap() = routes;
        self
    }

    pub fn calls(&self) -> Vec<NetRequest> {
        self.calls.lock().unwrap().clone()
    }

    fn check(&self, name: &str, kind: &'static str) -> Result<bool, NetError> {
        match self.links.lock().unwrap().get(name) {
            None => Ok(false),
            Some((_, false)) => Err(NetError::NotManaged(name.into())),
            Some((k, true)) if *k != kind => Err(NetError::WrongKind(name.into(), kind)),
            Some(_) => Ok(true),
        }
    }
}

impl NetOps for RecordingNet {
    fn ensure_bridge(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
        self.calls.lock().unwrap().push(NetRequest::EnsureBridge {
            name: name.into(),
            addr,
            prefix,
        });
        self.check(name, "bridge")?;
        self.links
            .lock()
            .unwrap()
            .insert(name.into(), ("bridge", true));
        Ok(())
    }

    fn create_tap(&self, name: &str, bridge: &str, owner: Owner) -> Result<(), NetError> {
        self.calls.lock().unwrap().push(NetRequest::CreateTap {
            name: name.into(),
            bridge: bridge.into(),
            owner,
        });
        if !self.check(bridge, "bridge")? {
            return Err(NetError::NoSuchLink(bridge.into()));
        }
        self.check(name, "tun")?;
        self.links
            .lock()
            .unwrap()
            .insert(name.into(), ("tun", true));
        Ok(())
    }

    fn delete_tap(&self, name: &str) -> Result<(), NetError> {
        self.calls
            .lock()
            .unwrap()
            .push(NetRequest::DeleteTap { name: name.into() });
        self.check(name, "tun")?;
        self.links.lock().unwrap().remove(name);
        Ok(())
    }

    fn delete_bridge(&self, name: &str) -> Result<(), NetError> {
        self.calls
            .lock()
            .unwrap()
            .push(NetRequest::DeleteBridge { name: name.into() });
        self.check(name, "bridge")?;
        self.links.lock().unwrap().remove(name);
        Ok(())
    }

    fn delete_managed(&self, name: &str) -> Result<(), NetError> {
        self.calls
            .lock()
            .unwrap()
            .push(NetRequest::DeleteManaged { name: name.into() });
        let mut links = self.links.lock().unwrap();
        match links.get(name) {
            Some((_, false)) => Err(NetError::NotManaged(name.into())),
            _ => {
                links.remove(name);
                Ok(())
            }
        }
    }

    fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        Ok(self
            .links
            .lock()
            .unwrap()
            .get(name)
            .map(|(kind, managed)| Link {
                name: name.into(),
                kind: Some((*kind).into()),
                alias: managed.then(|| MANAGED_ALIAS.into()),
                up: true,
                ..Default::default()
            }))
    }

    fn routes(&self) -> Result<Vec<Route4>, NetError> {
        Ok(self.routes.lock().unwrap().clone())
    }

    fn managed_links(&self) -> Result<Vec<Link>, NetError> {
        let names: Vec<String> = self
            .links
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (_, m))| *m)
            .map(|(n, _)| n.clone())
            .collect();
        Ok(names
            .iter()
            .filter_map(|n| self.link(n).ok().flatten())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_refuses_what_the_real_one_refuses() {
        let n = RecordingNet::new().with_link("docker0", "bridge", false);
        assert!(matches!(
            n.ensure_bridge("docker0", Ipv4Addr::LOCALHOST, 8),
            Err(NetError::NotManaged(_))
        ));
        let owner = Owner {
            uid: 1000,
            gid: 1000,
        };
        assert!(matches!(
            n.create_tap("banger-1", "banger0", owner),
            Err(NetError::NoSuchLink(_))
        ));
        n.ensure_bridge("banger0", Ipv4Addr::new(172, 30, 0, 1), 24)
            .unwrap();
        n.create_tap("banger-1", "banger0", owner).unwrap();
        assert!(n.link("banger-1").unwrap().unwrap().managed());
        let managed: Vec<String> = n
            .managed_links()
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(managed, ["banger-1", "banger0"]);
        n.delete_tap("banger-1").unwrap();
        assert_eq!(n.link("banger-1").unwrap(), None);
        assert_eq!(n.calls().len(), 5);
    }
}
