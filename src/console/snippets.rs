//! Ready-to-paste configuration that connects a client to this server with one API token.

use serde_json::json;

/// One client's configuration.
#[derive(Debug, Clone)]
pub struct Snippet {
    /// A stable id for the page (`snippet-<id>`).
    pub id: &'static str,
    pub title: &'static str,
    /// Where it goes, in a sentence.
    pub hint: &'static str,
    pub text: String,
}

/// The server name clients list the tools under.
const SERVER_NAME: &str = "agentskills";

/// The configuration of every client the console knows, for the server at `base_url`
/// (`https://host[:port]`, no trailing `/`) and `token` (or a placeholder before one is made).
pub fn for_token(base_url: &str, token: &str) -> Vec<Snippet> {
    let mcp_url = format!("{base_url}/mcp");
    let bearer = format!("Bearer {token}");
    let pretty = |value: serde_json::Value| {
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    };
    vec![
        Snippet {
            id: "claude-code",
            title: "Claude Code",
            hint: "Run this in a terminal.",
            text: format!(
                "claude mcp add --transport http {SERVER_NAME} {mcp_url} --header \"Authorization: {bearer}\""
            ),
        },
        Snippet {
            id: "mcp-json",
            title: "Cursor and other mcp.json clients",
            hint: "Add to ~/.cursor/mcp.json (or your client's mcp.json).",
            text: pretty(json!({
                "mcpServers": {
                    SERVER_NAME: {"url": mcp_url, "headers": {"Authorization": bearer}}
                }
            })),
        },
        Snippet {
            id: "vscode",
            title: "VS Code",
            hint: "Add to .vscode/mcp.json in your workspace.",
            text: pretty(json!({
                "servers": {
                    SERVER_NAME: {"type": "http", "url": mcp_url, "headers": {"Authorization": bearer}}
                }
            })),
        },
        Snippet {
            id: "claude-desktop",
            title: "Claude Desktop",
            hint: "Add to claude_desktop_config.json (needs Node.js: mcp-remote bridges stdio to HTTP).",
            text: pretty(json!({
                "mcpServers": {
                    SERVER_NAME: {
                        "command": "npx",
                        "args": ["-y", "mcp-remote", mcp_url, "--header", "Authorization:${AUTH_HEADER}"],
                        "env": {"AUTH_HEADER": bearer}
                    }
                }
            })),
        },
        Snippet {
            id: "python",
            title: "Python SDK",
            hint: "pip install \"mcp>=2\" (the official SDK, which brings httpx2), then run this script.",
            // The SDK's 2.x API: headers go on the HTTP client the transport is given, and the
            // transport yields two streams (1.x's `streamablehttp_client(url, headers=…)`, which
            // yielded three, is gone).
            text: format!(
                r#"import asyncio

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main():
    headers = {{"Authorization": "{bearer}"}}
    timeout = httpx2.Timeout(30, read=300)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        async with streamable_http_client("{mcp_url}", http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                print(await session.call_tool("load_skill_metadata", {{}}))


asyncio.run(main())
"#
            ),
        },
        Snippet {
            id: "typescript",
            title: "TypeScript SDK",
            hint: "npm install @modelcontextprotocol/sdk, then run this module.",
            text: format!(
                r#"import {{ Client }} from "@modelcontextprotocol/sdk/client/index.js";
import {{ StreamableHTTPClientTransport }} from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const transport = new StreamableHTTPClientTransport(new URL("{mcp_url}"), {{
  requestInit: {{ headers: {{ Authorization: "{bearer}" }} }},
}});
const client = new Client({{ name: "my-agent", version: "1.0.0" }});
await client.connect(transport);
console.log(await client.callTool({{ name: "load_skill_metadata", arguments: {{}} }}));
// Ends the session and its event stream, so that the process can exit.
await client.close();
"#
            ),
        },
        Snippet {
            id: "stdio",
            title: "stdio (on the server's machine)",
            hint: "For clients that start the server themselves; it reads this server's configuration and database.",
            text: pretty(json!({
                "mcpServers": {
                    SERVER_NAME: {
                        "command": "agentskills-mcp",
                        "args": ["stdio"],
                        "env": {"AGENTSKILLS_TOKEN": token}
                    }
                }
            })),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_snippet_names_the_server_and_the_token() {
        let token = "ask_live_0123";
        for snippet in for_token("https://skills.example.com", token) {
            assert!(snippet.text.contains(token), "{}", snippet.id);
            if snippet.id != "stdio" {
                assert!(
                    snippet.text.contains("https://skills.example.com/mcp"),
                    "{}",
                    snippet.id
                );
            }
        }
    }
}
