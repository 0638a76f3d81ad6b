//! The console's pages: askama templates (`src/console/templates/`, compiled into the binary,
//! every value HTML-escaped unless it is marked `safe`, which only sanitized Markdown is) and the
//! values they show. Every form, input, button, the file tree, the snippets, the drop zone and the
//! progress bar carry a stable `id` (or `data-testid` for repeated rows) for browser tests.

use askama::Template;

use super::snippets::Snippet;

/// What every page has: its title, the assets, the CSRF token of its forms, who is signed in.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
    pub csrf: String,
    /// The signed-in user's name; `None` on the sign-in and sign-up pages.
    pub user: Option<String>,
    /// The navigation entry of this page (`skills`, `tokens`, `status`, `account`), for
    /// `aria-current`.
    pub section: &'static str,
    /// A one-line message about what just happened.
    pub notice: Option<String>,
}

impl Chrome {
    pub fn new(
        title: impl Into<String>,
        csrf: String,
        user: Option<String>,
        section: &'static str,
    ) -> Chrome {
        Chrome {
            title: title.into(),
            css: &super::assets::stylesheet().path,
            js: &super::assets::script().path,
            icon: &super::assets::favicon().path,
            csrf,
            user,
            section,
            notice: None,
        }
    }

    pub fn with_notice(mut self, notice: Option<String>) -> Chrome {
        self.notice = notice;
        self
    }

    /// `aria-current="page"` for the current section's link.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

/// A form's values as typed and the server's messages about them.
#[derive(Debug, Clone, Default)]
pub struct FormState {
    values: Vec<(String, String)>,
    errors: Vec<(String, String)>,
    /// A message about the whole form.
    pub error: Option<String>,
}

impl FormState {
    pub fn keep(mut self, field: &str, value: impl Into<String>) -> FormState {
        self.values.push((field.to_owned(), value.into()));
        self
    }

    pub fn field_error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push((field.to_owned(), message.into()));
    }

    /// The value typed into `field`, or empty.
    pub fn value(&self, field: &str) -> &str {
        self.values
            .iter()
            .find(|(f, _)| f == field)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every message about `field`, joined.
    pub fn error_for(&self, field: &str) -> Option<String> {
        let messages: Vec<&str> = self
            .errors
            .iter()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
            .collect();
        (!messages.is_empty()).then(|| messages.join("; "))
    }

    /// `true` for `aria-invalid` when `field` has a message.
    pub fn invalid(&self, field: &str) -> &'static str {
        if self.errors.iter().any(|(f, _)| f == field) {
            "true"
        } else {
            "false"
        }
    }

    pub fn has_errors(&self) -> bool {
        self.error.is_some() || !self.errors.is_empty()
    }
}

#[derive(Debug, Template)]
#[template(path = "signin.html")]
pub struct SignInPage {
    pub chrome: Chrome,
    pub form: FormState,
    /// The sign-up link, carrying where to go next.
    pub signup: String,
}

#[derive(Debug, Template)]
#[template(path = "signup.html")]
pub struct SignUpPage {
    pub chrome: Chrome,
    pub form: FormState,
}

/// One skill in the list.
#[derive(Debug, Clone)]
pub struct SkillRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub is_active: bool,
    pub file_count: usize,
    pub size: String,
    pub updated: String,
}

#[derive(Debug, Template)]
#[template(path = "skills.html")]
pub struct SkillsPage {
    pub chrome: Chrome,
    pub search: String,
    pub items: Vec<SkillRow>,
    /// Skills that match the search.
    pub total: usize,
    /// Skills the user has at all (for the empty states).
    pub owned: usize,
    pub page: usize,
    pub pages: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
    pub create: FormState,
    /// Import from a Git repository.
    pub import: FormState,
    /// The upload limits, in words.
    pub limits: String,
}

/// A warning about a skill, as the API reports it.
#[derive(Debug, Clone)]
pub struct WarningView {
    pub code: String,
    pub field: String,
    pub message: String,
}

/// One line of the file tree: a folder opens, a file, a folder closes.
#[derive(Debug, Clone)]
pub enum TreeItem {
    Open(String),
    File(TreeFile),
    Close,
}

#[derive(Debug, Clone)]
pub struct TreeFile {
    pub name: String,
    pub path: String,
    pub href: String,
    pub size: String,
    pub current: bool,
}

/// The file shown on a skill's page.
#[derive(Debug, Clone)]
pub struct FileView {
    pub path: String,
    pub size: String,
    pub download: String,
    pub raw: String,
    pub body: FileBody,
}

#[derive(Debug, Clone)]
pub enum FileBody {
    /// `SKILL.md`: the front matter as text, the body rendered and sanitized.
    SkillMd {
        front_matter: Option<String>,
        html: String,
    },
    /// A text file, line by line.
    Text(Vec<String>),
    /// Not UTF-8, or too large to show here.
    Unshown(String),
}

/// The result of checking a `SKILL.md` without saving it.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub ok: bool,
    pub message: String,
    pub warnings: Vec<WarningView>,
}

#[derive(Debug, Template)]
#[template(path = "skill.html")]
pub struct SkillPage {
    pub chrome: Chrome,
    pub id: String,
    pub name: String,
    pub description: String,
    pub is_active: bool,
    /// The version the editors were opened on: they save only onto it (no lost updates).
    pub version: i64,
    pub file_count: usize,
    pub size: String,
    pub updated: String,
    pub warnings: Vec<WarningView>,
    pub tree: Vec<TreeItem>,
    pub file: Option<FileView>,
    pub description_form: FormState,
    pub skill_md: String,
    pub skill_md_form: FormState,
    pub check: Option<CheckResult>,
    pub delete_form: FormState,
    /// Where the skill was imported from, if it was.
    pub source: Option<SourceView>,
    pub sync_form: FormState,
    pub source_form: FormState,
}

/// An imported skill's source, for its page.
#[derive(Debug, Clone)]
pub struct SourceView {
    pub url: String,
    pub git_ref: String,
    pub path: String,
    /// The commit's id, shortened.
    pub commit: String,
    pub synced: String,
    pub checked: String,
    /// Changed here since the last sync: a sync needs `force` to replace it.
    pub changed_by_hand: bool,
    /// Hours between periodic syncs, empty for none.
    pub interval: String,
    pub next: Option<String>,
    pub last_error: Option<String>,
}

/// One API token in the list.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub expires: String,
    pub last_used: String,
    /// Its scopes, as written (`skills:read skills:run`).
    pub scopes: String,
    pub state: &'static str,
}

/// A token just made: shown this once.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub name: String,
    pub token: String,
    pub expires: String,
}

#[derive(Debug, Template)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    pub chrome: Chrome,
    pub tokens: Vec<TokenRow>,
    /// Apps connected through OAuth.
    pub apps: Vec<AppRow>,
    pub form: FormState,
    pub created: Option<CreatedToken>,
    pub base_url: String,
    pub snippets: Vec<Snippet>,
}

#[derive(Debug, Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub chrome: Chrome,
    pub email: String,
    pub username: String,
    pub created: String,
    pub profile: FormState,
    pub password: FormState,
    pub delete: FormState,
    pub confirmation: &'static str,
}

/// One quota: what is used of what is allowed.
#[derive(Debug, Clone)]
pub struct QuotaRow {
    pub id: &'static str,
    pub what: &'static str,
    pub used: String,
    pub limit: String,
    /// For a `<meter>`: used and the maximum, in one unit; `None` when nothing caps it.
    pub meter: Option<(u64, u64)>,
}

#[derive(Debug, Template)]
#[template(path = "status.html")]
pub struct StatusPage {
    pub chrome: Chrome,
    pub sandbox_ready: bool,
    pub sandbox_words: String,
    pub quotas: Vec<QuotaRow>,
}

#[derive(Debug, Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub heading: String,
    pub message: String,
}

/// The file tree of sorted paths, as folders that open and close around their files.
pub fn tree(
    paths: &[(String, u64)],
    href: impl Fn(&str) -> String,
    current: Option<&str>,
) -> Vec<TreeItem> {
    let mut items = Vec::new();
    let mut open: Vec<&str> = Vec::new();
    for (path, size) in paths {
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        let common = open.iter().zip(&parts).take_while(|(a, b)| a == b).count();
        while open.len() > common {
            open.pop();
            items.push(TreeItem::Close);
        }
        for dir in &parts[common..] {
            open.push(dir);
            items.push(TreeItem::Open((*dir).to_owned()));
        }
        items.push(TreeItem::File(TreeFile {
            name: name.to_owned(),
            path: path.clone(),
            href: href(path),
            size: super::human_bytes(*size),
            current: current == Some(path.as_str()),
        }));
    }
    items.extend(open.iter().map(|_| TreeItem::Close));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_opens_and_closes_folders_around_their_files() {
        let paths = [
            ("SKILL.md".to_owned(), 10),
            ("docs/a.md".to_owned(), 1),
            ("docs/deep/b.md".to_owned(), 1),
            ("scripts/run.py".to_owned(), 1),
        ];
        let items = tree(&paths, |p| format!("?file={p}"), Some("docs/a.md"));
        let shape: Vec<String> = items
            .iter()
            .map(|i| match i {
                TreeItem::Open(d) => format!("+{d}"),
                TreeItem::Close => "-".to_owned(),
                TreeItem::File(f) => f.name.clone(),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "SKILL.md", "+docs", "a.md", "+deep", "b.md", "-", "-", "+scripts", "run.py", "-"
            ]
        );
    }

    #[test]
    fn a_form_keeps_values_and_messages_by_field() {
        let mut form = FormState::default().keep("email", "a@b");
        form.field_error("email", "taken");
        assert_eq!(form.value("email"), "a@b");
        assert_eq!(form.error_for("email").as_deref(), Some("taken"));
        assert_eq!(form.invalid("email"), "true");
        assert_eq!(form.invalid("username"), "false");
        assert!(form.has_errors());
    }
}

/// The OAuth consent page: who asks, for what, as whom; Allow or Deny.
#[derive(Debug, Template)]
#[template(path = "consent.html")]
pub struct ConsentPage {
    pub chrome: Chrome,
    pub client_name: String,
    /// The metadata document's URL of a client that has one.
    pub client_url: Option<String>,
    /// Registered through dynamic registration: its name is its own word.
    pub registered: bool,
    /// The user has connected this client before.
    pub known: bool,
    pub account: String,
    /// Where the code goes: the redirect URI's host (or scheme, for an app's own scheme).
    pub redirect_host: String,
    pub resource: String,
    /// Each scope asked for, with what it allows in words.
    pub scopes: Vec<(&'static str, &'static str)>,
    /// The authorization request's parameters, carried to the decision.
    pub params: Vec<(&'static str, String)>,
}

/// An app connected through OAuth, on the tokens page.
#[derive(Debug, Clone)]
pub struct AppRow {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
}
