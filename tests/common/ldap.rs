//! A real directory for the LDAP tests: Debian's `slapd` with a config and
//! entries written here, on a free loopback port, stopped on drop.

use super::auth::{free_port, note_secret};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LDAP_BASE: &str = "ou=people,dc=skiff,dc=test";
pub const LDAP_READER: &str = "cn=reader,dc=skiff,dc=test";
/// The attribute whose values are a user's groups.
pub const LDAP_GROUP_ATTRIBUTE: &str = "ou";

/// A directory user: uid, password, groups.
pub struct LdapUser {
    pub uid: &'static str,
    pub password: &'static str,
    pub groups: &'static [&'static str],
}

pub struct Slapd {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Slapd {
    pub fn start(users: &[LdapUser]) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("db")).unwrap();
        let root_pw = format!("slapd-root-{:016x}", rand::random::<u64>());
        let reader_pw = format!("slapd-reader-{:016x}", rand::random::<u64>());
        note_secret(&root_pw);
        note_secret(&reader_pw);
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {pid}\n\
             database mdb\n\
             maxsize 10485760\n\
             suffix \"dc=skiff,dc=test\"\n\
             rootdn \"cn=admin,dc=skiff,dc=test\"\n\
             rootpw {root_pw}\n\
             directory {db}\n",
            pid = d.join("slapd.pid").display(),
            db = d.join("db").display(),
        );
        fs::write(d.join("slapd.conf"), conf).unwrap();
        let mut ldif = format!(
            "dn: dc=skiff,dc=test\nobjectClass: dcObject\nobjectClass: organization\n\
             o: skiff\ndc: skiff\n\n\
             dn: {LDAP_READER}\nobjectClass: organizationalRole\n\
             objectClass: simpleSecurityObject\ncn: reader\nuserPassword: {reader_pw}\n\n\
             dn: {LDAP_BASE}\nobjectClass: organizationalUnit\nou: people\n\n"
        );
        for u in users {
            note_secret(u.password);
            ldif += &format!(
                "dn: uid={uid},{LDAP_BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
                 cn: {uid}\nsn: {uid}\nuserPassword: {pw}\n",
                uid = u.uid,
                pw = u.password
            );
            for g in u.groups {
                ldif += &format!("{LDAP_GROUP_ATTRIBUTE}: {g}\n");
            }
            ldif += "\n";
        }
        fs::write(d.join("entries.ldif"), ldif).unwrap();
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("entries.ldif"))
            .output()
            .expect("slapadd (Debian's slapd; scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // -d keeps it in the foreground, so it is our child to stop.
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{port}/"))
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting slapd");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "slapd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        fs::write(
            d.join("bind.json"),
            serde_json::json!({"bindDN": LDAP_READER, "bindPassword": reader_pw}).to_string(),
        )
        .unwrap();
        Slapd { child, port, dir }
    }

    /// zot's credentials file for skiff's own bind.
    pub fn credentials_file(&self) -> PathBuf {
        self.dir.path().join("bind.json")
    }

    /// The `http.auth.ldap` section for this directory.
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "address": "127.0.0.1",
            "port": self.port,
            "insecure": true,
            "baseDN": LDAP_BASE,
            "userAttribute": "uid",
            "userGroupAttribute": LDAP_GROUP_ATTRIBUTE,
            "credentialsFile": self.credentials_file(),
        })
    }

    /// Stop the directory (the registry then cannot check LDAP users).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
