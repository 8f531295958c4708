// Shared by the tests: synthesizes the app as `cdk synth` does (cdk.json's feature flags, the
// same buildApp as bin/tributary.ts) with a dummy account, region and certificate, offline.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Annotations as CdkAnnotations, App } from 'aws-cdk-lib';
import { Annotations, Template } from 'aws-cdk-lib/assertions';
import { buildApp } from '../lib/tributary-stack';

export const ACCOUNT = '123456789012';
export const CERTIFICATE = `arn:aws:acm:us-east-1:${ACCOUNT}:certificate/00000000-0000-0000-0000-000000000000`;
export const REPO_ROOT = path.join(__dirname, '..', '..');

const cdkJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8')) as { context: Record<string, unknown> };

export interface Synth {
  readonly template: Template;
  readonly images: Template;
  readonly annotations: Annotations;
  /** The platform template as plain JSON, for checks that walk every resource. */
  readonly json: { Resources: Record<string, Resource> };
}

export interface Resource {
  readonly Type: string;
  readonly Properties?: Record<string, any>;
  readonly DependsOn?: string[] | string;
  readonly Metadata?: Record<string, any>;
  readonly DeletionPolicy?: string;
}

// One scratch directory per test file for the cloud assemblies, removed after its tests (this
// module is loaded once per test file, so the hook belongs to that file).
const outRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-infra-test-'));
afterAll(() => fs.rmSync(outRoot, { recursive: true, force: true }));
let apps = 0;

/**
 * Synthesizes the app with `context` on top of the defaults. The warning that the API is open
 * (no JWT settings) is acknowledged unless `openApiWarning` is true, to keep test output quiet.
 */
export function synth(context: Record<string, string> = {}, openApiWarning = false): Synth {
  const app = new App({
    outdir: path.join(outRoot, String(apps++)),
    context: {
      ...cdkJson.context,
      account: ACCOUNT,
      region: 'us-east-1',
      certificateArn: CERTIFICATE,
      ...context,
    },
  });
  const { platform, images } = buildApp(app, {});
  if (!openApiWarning) CdkAnnotations.of(platform).acknowledgeWarning('tributary:api-open');
  const template = Template.fromStack(platform);
  return {
    template,
    images: Template.fromStack(images),
    annotations: Annotations.fromStack(platform),
    json: template.toJSON() as Synth['json'],
  };
}

/** Resources of one type, as [logical id, resource] pairs. */
export function resourcesOf(s: Synth, type: string): [string, Resource][] {
  return Object.entries(s.json.Resources).filter(([, r]) => r.Type === type);
}

export interface Container {
  readonly Name: string;
  readonly Command?: string[];
  readonly EntryPoint?: string[];
  readonly Environment?: { Name: string; Value: unknown }[];
  readonly Secrets?: { Name: string; ValueFrom: unknown }[];
  readonly ReadonlyRootFilesystem?: boolean;
  readonly LogConfiguration?: { LogDriver: string; Options: Record<string, unknown> };
  readonly HealthCheck?: { Command: string[] };
  readonly Essential?: boolean;
  readonly DependsOn?: { ContainerName: string; Condition: string }[];
}

/** Every container definition, with the family of its task definition. */
export function containers(s: Synth): { family: string; container: Container }[] {
  return resourcesOf(s, 'AWS::ECS::TaskDefinition').flatMap(([, r]) =>
    (r.Properties!.ContainerDefinitions as Container[]).map((container) => ({ family: r.Properties!.Family as string, container })),
  );
}

export function container(s: Synth, family: string, name: string): Container {
  const found = containers(s).find((c) => c.family === family && c.container.Name === name);
  if (!found) throw new Error(`no container ${name} in task family ${family}`);
  return found.container;
}

export function envOf(c: Container): Record<string, unknown> {
  return Object.fromEntries((c.Environment ?? []).map((e) => [e.Name, e.Value]));
}

export function secretNamesOf(c: Container): string[] {
  return (c.Secrets ?? []).map((e) => e.Name);
}

/** The logical id of the one resource of a type whose logical id starts with `prefix`. */
export function logicalId(s: Synth, type: string, prefix: string): string {
  const ids = resourcesOf(s, type).map(([id]) => id).filter((id) => id.startsWith(prefix));
  if (ids.length !== 1) throw new Error(`expected one ${type} named ${prefix}*, found ${ids.join(', ') || 'none'}`);
  return ids[0];
}
