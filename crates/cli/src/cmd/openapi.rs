//! `tributary openapi`: the gateway's OpenAPI document, as generated from the code.

use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&tributary_gateway::ops::openapi_doc())?);
    Ok(ExitCode::SUCCESS)
}
