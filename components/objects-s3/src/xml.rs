//! The XML S3 speaks: what is read of its answers (error codes, listings,
//! a multipart upload's id, the ETag of a copy) and the two request bodies
//! sent (completing a multipart upload, deleting many keys). Elements are
//! found by local name, so the S3 namespace (or its absence, on some
//! S3-compatible stores) does not matter.

use roxmltree::{Document, Node};

fn parse(body: &[u8]) -> Result<Document<'_>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "an answer that is not UTF-8".to_string())?;
    // S3 keeps a long copy's connection alive with whitespace before its
    // answer, which XML does not allow ahead of the declaration.
    Document::parse(text.trim_start()).map_err(|e| format!("an answer that is not XML: {e}"))
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn children<'a, 'i: 'a>(n: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn text_of(n: Node<'_, '_>, name: &str) -> Option<String> {
    child(n, name).map(|c| c.text().unwrap_or_default().to_string())
}

/// An `<Error>` document: S3's error answers, and what a copy or a
/// completed multipart upload may answer with status 200 when it fails
/// after it started.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Error {
    pub code: String,
    pub message: String,
}

/// The error `body` holds, if it is an `<Error>` document.
pub fn error(body: &[u8]) -> Option<S3Error> {
    let doc = parse(body).ok()?;
    let root = doc.root_element();
    (root.tag_name().name() == "Error").then(|| S3Error {
        code: text_of(root, "Code").unwrap_or_default(),
        message: text_of(root, "Message").unwrap_or_default(),
    })
}

/// One page of a ListObjectsV2 answer.
#[derive(Debug, Default, PartialEq)]
pub struct ListPage {
    /// Keys, with their sizes.
    pub objects: Vec<(String, u64)>,
    /// Common prefixes (with a delimiter), each ending in it.
    pub prefixes: Vec<String>,
    /// The continuation token of the next page, if there is one.
    pub next: Option<String>,
}

pub fn list_page(body: &[u8]) -> Result<ListPage, String> {
    let doc = parse(body)?;
    let root = doc.root_element();
    if root.tag_name().name() != "ListBucketResult" {
        return Err(format!("a listing answered <{}>", root.tag_name().name()));
    }
    let mut page = ListPage::default();
    for c in children(root, "Contents") {
        let key = text_of(c, "Key").ok_or("a listed object without a key")?;
        let size = text_of(c, "Size")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        page.objects.push((key, size));
    }
    for p in children(root, "CommonPrefixes") {
        if let Some(prefix) = text_of(p, "Prefix") {
            page.prefixes.push(prefix);
        }
    }
    let truncated = text_of(root, "IsTruncated").is_some_and(|t| t.trim() == "true");
    page.next = text_of(root, "NextContinuationToken").filter(|t| truncated && !t.is_empty());
    Ok(page)
}

/// The `UploadId` of an InitiateMultipartUploadResult.
pub fn upload_id(body: &[u8]) -> Result<String, String> {
    let doc = parse(body)?;
    text_of(doc.root_element(), "UploadId")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| "CreateMultipartUpload answered no UploadId".to_string())
}

/// The new ETag, and `LastModified` in ms, of a CopyObjectResult or a
/// CopyPartResult.
pub fn copy_result(body: &[u8]) -> Result<(String, Option<u64>), String> {
    let doc = parse(body)?;
    let root = doc.root_element();
    let etag = text_of(root, "ETag")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            format!(
                "a copy answered <{}> without an ETag",
                root.tag_name().name()
            )
        })?;
    let modified = text_of(root, "LastModified").and_then(|t| crate::clock::iso_ms(&t));
    Ok((etag, modified))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The body of a CompleteMultipartUpload: the parts by number and ETag.
pub fn complete_body(parts: &[(u32, String)]) -> String {
    let mut out = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        out.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            escape(etag)
        ));
    }
    out.push_str("</CompleteMultipartUpload>");
    out
}

/// The body of a DeleteObjects (at most 1000 keys), quiet: only failures
/// would be listed in the answer.
pub fn delete_body(keys: &[String]) -> String {
    let mut out = String::from("<Delete><Quiet>true</Quiet>");
    for k in keys {
        out.push_str(&format!("<Object><Key>{}</Key></Object>", escape(k)));
    }
    out.push_str("</Delete>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_with_or_without_a_namespace() {
        let e = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>a</Key></Error>"#;
        assert_eq!(error(e).map(|e| e.code), Some("NoSuchKey".to_string()));
        let ok = br#"<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ETag>"x-2"</ETag></CompleteMultipartUploadResult>"#;
        assert_eq!(error(ok), None);
        assert_eq!(error(b""), None);
        let late = b"  \n  <?xml version=\"1.0\"?><Error><Code>InternalError</Code></Error>";
        assert_eq!(
            error(late).map(|e| e.code),
            Some("InternalError".to_string())
        );
    }

    #[test]
    fn a_listing_page() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>p/</Prefix><KeyCount>3</KeyCount><IsTruncated>true</IsTruncated>
  <NextContinuationToken>tok/+=</NextContinuationToken>
  <Contents><Key>p/a&amp;b</Key><Size>12</Size><ETag>"e"</ETag></Contents>
  <Contents><Key>p/c</Key><Size>0</Size></Contents>
  <CommonPrefixes><Prefix>p/d/</Prefix></CommonPrefixes>
</ListBucketResult>"#;
        let page = list_page(body).unwrap();
        assert_eq!(
            page.objects,
            vec![("p/a&b".to_string(), 12), ("p/c".to_string(), 0)]
        );
        assert_eq!(page.prefixes, vec!["p/d/".to_string()]);
        assert_eq!(page.next.as_deref(), Some("tok/+="));
        let last = br#"<ListBucketResult><IsTruncated>false</IsTruncated><NextContinuationToken>x</NextContinuationToken></ListBucketResult>"#;
        assert_eq!(list_page(last).unwrap().next, None);
    }

    #[test]
    fn multipart_and_copy_answers() {
        let init = br#"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>id-1</UploadId></InitiateMultipartUploadResult>"#;
        assert_eq!(upload_id(init).unwrap(), "id-1");
        let copy = br#"<CopyObjectResult><LastModified>2015-10-21T07:28:00.000Z</LastModified><ETag>&quot;abc&quot;</ETag></CopyObjectResult>"#;
        assert_eq!(
            copy_result(copy).unwrap(),
            ("\"abc\"".to_string(), Some(1_445_412_480_000))
        );
        assert_eq!(
            complete_body(&[(1, "\"a\"".into())]),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag></Part></CompleteMultipartUpload>"
        );
        assert_eq!(
            delete_body(&["a<b".into()]),
            "<Delete><Quiet>true</Quiet><Object><Key>a&lt;b</Key></Object></Delete>"
        );
    }
}
