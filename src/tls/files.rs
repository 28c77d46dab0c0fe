//! Certificates mounted as files: `tls.crt`, `tls.key` and optional `ca.crt` in a directory
//! (cert-manager, or any Secret volume), polled for changes by [`super::reload`].

use std::path::{Path, PathBuf};

use super::{CA_CERT, CertError, ServingCert, TLS_CERT, TLS_KEY};

/// Certificates mounted as files (cert-manager or any Secret volume).
#[derive(Clone, Debug)]
pub struct FileCertSource {
    dir: PathBuf,
}

/// The raw contents of the files, to detect changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

impl FileCertSource {
    /// Reads `tls.crt`, `tls.key` and optional `ca.crt` from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, file: &str) -> Result<Vec<u8>, CertError> {
        let path = self.dir.join(file);
        std::fs::read(&path).map_err(|source| CertError::Read { path, source })
    }

    /// The files' current contents (cheap; compare with the last load to detect a change).
    pub fn contents(&self) -> Result<FileContents, CertError> {
        let ca = match self.read(CA_CERT) {
            Ok(b) => Some(b),
            Err(CertError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(FileContents {
            cert: self.read(TLS_CERT)?,
            key: self.read(TLS_KEY)?,
            ca,
        })
    }

    /// Parses contents read by [`Self::contents`].
    pub fn parse(&self, contents: &FileContents) -> Result<ServingCert, CertError> {
        let what = |f: &str| format!("{} in {}", f, self.dir.display());
        let cert =
            String::from_utf8(contents.cert.clone()).map_err(|_| CertError::BadCertificate {
                what: what(TLS_CERT),
                reason: "not UTF-8 text".into(),
            })?;
        let key = String::from_utf8(contents.key.clone()).map_err(|_| CertError::BadKey {
            what: what(TLS_KEY),
            reason: "not UTF-8 text".into(),
        })?;
        let ca = match &contents.ca {
            Some(b) => {
                Some(
                    String::from_utf8(b.clone()).map_err(|_| CertError::BadCertificate {
                        what: what(CA_CERT),
                        reason: "not UTF-8 text".into(),
                    })?,
                )
            }
            None => None,
        };
        ServingCert::from_pem(&cert, &key, ca.as_deref(), &what(TLS_CERT))
    }

    /// Reads and parses the files.
    pub fn load(&self) -> Result<(ServingCert, FileContents), CertError> {
        let contents = self.contents()?;
        Ok((self.parse(&contents)?, contents))
    }
}
