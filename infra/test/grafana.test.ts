// Managed Grafana provisioned by the stack (-c managedGrafana=true): the custom resources that
// make the data source and the four dashboards from deploy/monitoring/grafana/dashboards, their
// function and its permissions.
import * as fs from 'fs';
import * as path from 'path';
import { DASHBOARDS_DIR, dashboardFiles, PROVISIONER_ACTIONS, PROVISIONER_DIR } from '../lib/grafana';
import { logicalId, REPO_ROOT, resourcesOf, synth, Synth } from './synth';

let g: Synth;
beforeAll(() => {
  g = synth({ managedGrafana: 'true' });
});

const grafanaId = () => logicalId(g, 'AWS::Grafana::Workspace', 'ObservabilityGrafana');
const functionId = () => logicalId(g, 'AWS::Lambda::Function', 'ObservabilityGrafanaDashboardsFunction');

test('no provisioning without managedGrafana', () => {
  const s = synth();
  expect(resourcesOf(s, 'Custom::GrafanaSetup')).toHaveLength(0);
  expect(resourcesOf(s, 'Custom::GrafanaDashboard')).toHaveLength(0);
  expect(resourcesOf(s, 'AWS::Lambda::Function').map(([id]) => id).filter((id) => id.includes('Grafana'))).toEqual([]);
  expect(JSON.stringify(s.json)).not.toContain('grafana:');
});

test('one dashboard resource per file of deploy/monitoring/grafana/dashboards, carrying the file unchanged', () => {
  expect(DASHBOARDS_DIR).toBe(path.join(REPO_ROOT, 'deploy', 'monitoring', 'grafana', 'dashboards'));
  const files = fs.readdirSync(DASHBOARDS_DIR).filter((f) => f.endsWith('.json')).sort();
  expect(files).toHaveLength(4);
  const resources = resourcesOf(g, 'Custom::GrafanaDashboard').map(([, r]) => r);
  expect(resources).toHaveLength(files.length);
  const carried = resources.map((r) => r.Properties!.Dashboard as string).sort();
  const texts = files.map((f) => fs.readFileSync(path.join(DASHBOARDS_DIR, f), 'utf8')).sort();
  expect(carried).toEqual(texts);
  expect(dashboardFiles().map(([name]) => name)).toEqual(files.map((f) => f.replace(/\.json$/, '')));
  const setup = logicalId(g, 'Custom::GrafanaSetup', 'ObservabilityGrafanaDashboardsSetup');
  for (const r of resources) {
    expect(r.Properties).toMatchObject({
      ServiceToken: { 'Fn::GetAtt': [functionId(), 'Arn'] },
      Kind: 'Dashboard',
      WorkspaceId: { 'Fn::GetAtt': [grafanaId(), 'Id'] },
      GrafanaUrl: { 'Fn::Join': ['', ['https://', { 'Fn::GetAtt': [grafanaId(), 'Endpoint'] }]] },
      FolderUid: 'tributary',
    });
    // After the folder and the data source exist, and deleted before them.
    expect(r.DependsOn).toEqual([setup]);
    // Well under the 256 KB an asynchronous invocation took until 2025 (1 MB since), old properties included.
    expect(2 * JSON.stringify(r.Properties).length).toBeLessThan(100_000);
  }
  // Every panel names the data source the setup makes (annotations also use Grafana's built-in one).
  for (const text of texts) {
    const uids = new Set([...text.matchAll(/"datasource":\s*\{[^}]*"uid":\s*"([^"]+)"/g)].map((m) => m[1]));
    uids.delete('-- Grafana --');
    expect([...uids]).toEqual(['prometheus']);
  }
  // CloudFormation takes templates of up to 1 MB (from S3): the dashboards fit.
  expect(JSON.stringify(g.json).length).toBeLessThan(1_000_000);
});

test('the data source is the AMP workspace, signed with SigV4 in the stack\'s region, in the folder Tributary', () => {
  const setups = resourcesOf(g, 'Custom::GrafanaSetup');
  expect(setups).toHaveLength(1);
  expect(setups[0][1].Properties).toEqual({
    ServiceToken: { 'Fn::GetAtt': [functionId(), 'Arn'] },
    Kind: 'Setup',
    WorkspaceId: { 'Fn::GetAtt': [grafanaId(), 'Id'] },
    GrafanaUrl: { 'Fn::Join': ['', ['https://', { 'Fn::GetAtt': [grafanaId(), 'Endpoint'] }]] },
    ServiceAccountName: 'tributary-provisioner',
    FolderUid: 'tributary',
    FolderTitle: 'Tributary',
    DataSourceUid: 'prometheus',
    DataSourceName: 'Prometheus',
    PrometheusUrl: { 'Fn::GetAtt': [logicalId(g, 'AWS::APS::Workspace', 'ObservabilityWorkspace'), 'PrometheusEndpoint'] },
    Region: 'us-east-1',
    ScrapeInterval: '30s',
  });
  // Service accounts need Grafana 9 or later; the dashboards are Grafana 10's.
  g.template.hasResourceProperties('AWS::Grafana::Workspace', { GrafanaVersion: '10.4' });
});

test('the function: the handler file as it is, a supported Node.js runtime, bounded, logging to its own group', () => {
  const fn = resourcesOf(g, 'AWS::Lambda::Function').find(([id]) => id === functionId())![1].Properties!;
  expect(fn.Runtime).toBe('nodejs24.x');
  expect(fn.Handler).toBe('index.handler');
  expect(fn.Timeout).toBe(120);
  expect(fs.readdirSync(PROVISIONER_DIR)).toEqual(['index.js']);
  const logGroupId = logicalId(g, 'AWS::Logs::LogGroup', 'ServicesLogsgrafanaprovisioner');
  expect(fn.LoggingConfig).toEqual({ LogGroup: { Ref: logGroupId } });
  const group = resourcesOf(g, 'AWS::Logs::LogGroup').find(([id]) => id === logGroupId)![1].Properties!;
  expect(group).toMatchObject({ LogGroupName: '/tributary/grafana-provisioner', RetentionInDays: 30 });
  expect(group.KmsKeyId).toBeDefined();
});

test('the function\'s role may call the five service-account actions on this workspace and write its logs, nothing else', () => {
  const fn = resourcesOf(g, 'AWS::Lambda::Function').find(([id]) => id === functionId())![1].Properties!;
  const role = fn.Role['Fn::GetAtt'][0];
  const roleProps = resourcesOf(g, 'AWS::IAM::Role').find(([id]) => id === role)![1].Properties!;
  expect(roleProps.ManagedPolicyArns).toBeUndefined();
  expect(roleProps.Policies).toBeUndefined();
  expect(roleProps.AssumeRolePolicyDocument.Statement).toEqual([
    { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' } },
  ]);
  const policies = resourcesOf(g, 'AWS::IAM::Policy').filter(([, p]) => p.Properties!.Roles.some((r: any) => r.Ref === role));
  expect(policies).toHaveLength(1);
  expect(policies[0][1].Properties!.PolicyDocument.Statement).toEqual([
    {
      Sid: 'ServiceAccountTokensOfTheWorkspace',
      Effect: 'Allow',
      Action: [...PROVISIONER_ACTIONS].sort(),
      Resource: { 'Fn::Join': ['', ['arn:aws:grafana:us-east-1:123456789012:/workspaces/', { 'Fn::GetAtt': [grafanaId(), 'Id'] }]] },
    },
    {
      Effect: 'Allow',
      Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      Resource: { 'Fn::GetAtt': [logicalId(g, 'AWS::Logs::LogGroup', 'ServicesLogsgrafanaprovisioner'), 'Arn'] },
    },
  ]);
  // Exactly the calls the handler makes.
  const handler = fs.readFileSync(path.join(PROVISIONER_DIR, 'index.js'), 'utf8');
  const called = [...new Set([...handler.matchAll(/send\('([A-Za-z]+)'/g)].map((m) => `grafana:${m[1]}`))].sort();
  expect(called).toEqual([...PROVISIONER_ACTIONS].sort());
});
