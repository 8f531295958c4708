// Production Prometheus: the AMP workspace, its rule groups from deploy/monitoring/rules, its
// alert manager to the SNS topic, the collector's scrape targets, network and permissions.
import * as fs from 'fs';
import * as path from 'path';
import { adotConfig, MSK_KEEP, ruleFiles, RULES_DIR } from '../lib/observability';
import { logicalId, REPO_ROOT, resourcesOf, synth, Synth } from './synth';

let s: Synth;
beforeAll(() => {
  s = synth();
});

/** The collector container's environment. */
function collectorEnv(t: Synth): Record<string, any> {
  const task = resourcesOf(t, 'AWS::ECS::TaskDefinition').find(([, r]) => r.Properties!.Family === 'tributary-collector');
  expect(task).toBeDefined();
  const c = task![1].Properties!.ContainerDefinitions[0];
  return Object.fromEntries(c.Environment.map((e: any) => [e.Name, e.Value]));
}

/** The collector's configuration as the task receives it: plain text, deploy-time values as ${env:...}. */
function collectorConfig(t: Synth): any {
  const text = collectorEnv(t).AOT_CONFIG_CONTENT;
  expect(typeof text).toBe('string');
  return JSON.parse(text);
}

test('one AMP workspace, with one rule groups namespace per file of deploy/monitoring/rules, read verbatim', () => {
  s.template.resourceCountIs('AWS::APS::Workspace', 1);
  const files = fs.readdirSync(RULES_DIR).filter((f) => f.endsWith('.yml')).sort();
  expect(RULES_DIR).toBe(path.join(REPO_ROOT, 'deploy', 'monitoring', 'rules'));
  expect(files.length).toBeGreaterThanOrEqual(2); // tributary.yml and the MSK naming, msk.yml
  const namespaces = resourcesOf(s, 'AWS::APS::RuleGroupsNamespace').map(([, r]) => r.Properties!);
  expect(namespaces.map((n) => n.Name).sort()).toEqual(files.map((f) => f.replace(/\.yml$/, '')));
  const workspace = logicalId(s, 'AWS::APS::Workspace', 'ObservabilityWorkspace');
  for (const n of namespaces) {
    expect(n.Data).toBe(fs.readFileSync(path.join(RULES_DIR, `${n.Name}.yml`), 'utf8'));
    expect(n.Workspace).toEqual({ 'Fn::GetAtt': [workspace, 'Arn'] });
  }
  // The spec's four alerts are among them.
  const all = ruleFiles().map(([, text]) => text).join('\n');
  for (const alert of ['TributaryConsumerLagHigh', 'TributaryApiErrorRateHigh', 'KafkaBrokerDown', 'TributaryDeadLettersIncreasing']) {
    expect(all).toContain(`alert: ${alert}`);
  }
});

test('the alert manager sends every alert, and its resolution, to the stack SNS topic', () => {
  const ws = resourcesOf(s, 'AWS::APS::Workspace')[0][1].Properties!;
  const def = ws.AlertManagerDefinition['Fn::Join'][1];
  const topic = logicalId(s, 'AWS::SNS::Topic', 'MonitoringAlarms');
  expect(def).toContainEqual({ Ref: topic });
  const text = def.map((p: unknown) => (typeof p === 'string' ? p : 'ARN')).join('');
  expect(text).toMatch(/alertmanager_config: \|\n {2}route:\n {4}receiver: sns/);
  expect(text).toContain('topic_arn: ARN');
  expect(text).toContain('send_resolved: true');
  // The topic lets the workspace (and only it) publish; the topic's key lets AMP encrypt.
  const policies = resourcesOf(s, 'AWS::SNS::TopicPolicy').map(([, r]) => r.Properties!);
  const statement = policies.flatMap((p) => p.PolicyDocument.Statement).find((st: any) => st.Sid === 'AmpAlertManagerPublishes');
  expect(statement).toMatchObject({
    Effect: 'Allow',
    Principal: { Service: 'aps.amazonaws.com' },
    Action: expect.arrayContaining(['sns:Publish', 'sns:GetTopicAttributes']),
    Resource: { Ref: topic },
    Condition: { ArnEquals: { 'aws:SourceArn': { 'Fn::GetAtt': [logicalId(s, 'AWS::APS::Workspace', 'ObservabilityWorkspace'), 'Arn'] } } },
  });
  const key = resourcesOf(s, 'AWS::KMS::Key').find(([id]) => id.startsWith('StoragePlatformKey'))![1];
  expect(key.Properties!.KeyPolicy.Statement).toContainEqual(expect.objectContaining({
    Sid: 'AmpAlertManagerEncryptsForSns',
    Principal: { Service: 'aps.amazonaws.com' },
  }));
});

test('the collector scrapes every service through Cloud Map and every broker exporter, with the rules\' job names', () => {
  const cfg = collectorConfig(s);
  const jobs = Object.fromEntries(cfg.receivers.prometheus.config.scrape_configs.map((j: any) => [j.job_name, j]));
  expect(Object.keys(jobs).sort()).toEqual(['gateway', 'kafka', 'kafka-node', 'processor']);
  expect(jobs.gateway.dns_sd_configs).toEqual([expect.objectContaining({ type: 'A', port: 8080, names: ['gateway.tributary.internal'] })]);
  expect(jobs.processor.dns_sd_configs[0]).toMatchObject({ type: 'A', port: 8082 });
  expect(jobs.processor.dns_sd_configs[0].names).toEqual(['processor-0', 'processor-1', 'processor-2'].map((p) => `${p}.tributary.internal`));
  // Three brokers, on each exporter.
  expect(jobs.kafka.static_configs[0].targets).toEqual([1, 2, 3].map((n) => `b-${n}.\${env:MSK_BROKER_DOMAIN}:11001`));
  expect(jobs['kafka-node'].static_configs[0].targets).toEqual([1, 2, 3].map((n) => `b-${n}.\${env:MSK_BROKER_DOMAIN}:11002`));
  expect(cfg.exporters.prometheusremotewrite.endpoint).toBe('${env:AMP_REMOTE_WRITE_URL}');
  const workspace = logicalId(s, 'AWS::APS::Workspace', 'ObservabilityWorkspace');
  expect(collectorEnv(s).AMP_REMOTE_WRITE_URL).toEqual({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [workspace, 'PrometheusEndpoint'] }, 'api/v1/remote_write']] });
  expect(cfg.exporters.prometheusremotewrite.auth.authenticator).toBe('sigv4auth');
  expect(cfg.extensions.sigv4auth.service).toBe('aps');
  // Every name the collector resolves is registered in Cloud Map.
  const registered = resourcesOf(s, 'AWS::ServiceDiscovery::Service').map(([, r]) => r.Properties!.Name).sort();
  expect(registered).toEqual(expect.arrayContaining(['gateway', 'processor-0', 'processor-1', 'processor-2']));
});

test('broker targets are b-1 .. b-N of the bootstrap brokers\' domain', () => {
  const six = collectorConfig(synth({ brokerCount: '6' }));
  const kafka = six.receivers.prometheus.config.scrape_configs.find((j: any) => j.job_name === 'kafka');
  expect(kafka.static_configs[0].targets).toHaveLength(6);
  // The domain comes from the bootstrap string at deploy time: its first broker without `b-<n>.`.
  const domain = collectorEnv(s).MSK_BROKER_DOMAIN;
  expect(domain['Fn::Join'][0]).toBe('.');
  expect(domain['Fn::Join'][1].map((p: any) => p['Fn::Select'][0])).toEqual([1, 2, 3, 4, 5, 6, 7]);
  expect(JSON.stringify(domain)).toContain('BootstrapBrokerStringSaslScram');
});

test('the collector may only remote-write into its workspace', () => {
  const task = resourcesOf(s, 'AWS::ECS::TaskDefinition').find(([, r]) => r.Properties!.Family === 'tributary-collector')![1];
  const role = task.Properties!.TaskRoleArn['Fn::GetAtt'][0];
  const policies = resourcesOf(s, 'AWS::IAM::Policy').filter(([, p]) => p.Properties!.Roles.some((r: any) => r.Ref === role));
  const statements = policies.flatMap(([, p]) => p.Properties!.PolicyDocument.Statement);
  expect(statements).toEqual([{
    Sid: 'RemoteWriteToTheWorkspace',
    Effect: 'Allow',
    Action: 'aps:RemoteWrite',
    Resource: { 'Fn::GetAtt': [logicalId(s, 'AWS::APS::Workspace', 'ObservabilityWorkspace'), 'Arn'] },
  }]);
});

test('the collector runs once, privately, read-only, health-checked', () => {
  const service = resourcesOf(s, 'AWS::ECS::Service').find(([, r]) => r.Properties!.ServiceName === 'collector')![1].Properties!;
  expect(service.DesiredCount).toBe(1);
  expect(service.DeploymentConfiguration).toMatchObject({ MinimumHealthyPercent: 0, MaximumPercent: 100 });
  expect(service.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp).toBe('DISABLED');
  const task = resourcesOf(s, 'AWS::ECS::TaskDefinition').find(([, r]) => r.Properties!.Family === 'tributary-collector')![1];
  const c = task.Properties!.ContainerDefinitions[0];
  expect(c.Image).toMatch(/^public\.ecr\.aws\/aws-observability\/aws-otel-collector:v/);
  expect(c.ReadonlyRootFilesystem).toBe(true);
  expect(c.HealthCheck.Command).toEqual(['CMD', '/healthcheck']);
  // Its egress: the four scrapes and HTTPS.
  const sg = resourcesOf(s, 'AWS::EC2::SecurityGroup').find(([id]) => id.startsWith('ObservabilityCollectorSg'))![1];
  const egress = [
    ...(sg.Properties!.SecurityGroupEgress ?? []),
    ...resourcesOf(s, 'AWS::EC2::SecurityGroupEgress').map(([, r]) => r.Properties!).filter((e) => JSON.stringify(e.GroupId).includes('ObservabilityCollectorSg')),
  ];
  expect(egress.map((e: any) => e.FromPort).sort()).toEqual([11001, 11002, 443, 8080, 8082].sort());
});

test('Amazon Managed Grafana only when asked, reading the workspace and nothing else', () => {
  s.template.resourceCountIs('AWS::Grafana::Workspace', 0);
  const g = synth({ managedGrafana: 'true' });
  g.template.resourceCountIs('AWS::Grafana::Workspace', 1);
  g.template.hasResourceProperties('AWS::Grafana::Workspace', { DataSources: ['PROMETHEUS'], PermissionType: 'CUSTOMER_MANAGED' });
  const role = resourcesOf(g, 'AWS::IAM::Role').find(([id]) => id.startsWith('ObservabilityGrafanaRole'))!;
  const policy = resourcesOf(g, 'AWS::IAM::Policy').find(([, p]) => p.Properties!.Roles.some((r: any) => r.Ref === role[0]))![1];
  const query = policy.Properties!.PolicyDocument.Statement.find((st: any) => st.Sid === 'QueryTheWorkspace');
  expect(query.Resource).toEqual({ 'Fn::GetAtt': [logicalId(g, 'AWS::APS::Workspace', 'ObservabilityWorkspace'), 'Arn'] });
  expect(query.Action).not.toContain('aps:RemoteWrite');
});

test('the collector configuration is plain JSON (YAML) without tokens', () => {
  const cfg = adotConfig({ region: 'eu-west-1', remoteWriteUrl: 'https://x/api/v1/remote_write', gateway: ['g'], processors: ['p'], brokers: [] });
  expect(JSON.parse(JSON.stringify(cfg)).service.pipelines.metrics.exporters).toEqual(['prometheusremotewrite']);
});

test('the collector keeps every MSK series that msk.yml maps, and the maps cover the kept ones', () => {
  const keep = new RegExp(`^(?:${MSK_KEEP})$`);
  const text = fs.readFileSync(path.join(RULES_DIR, 'msk.yml'), 'utf8');
  // Every selector of an MSK metric in msk.yml: metric{name="X", ...} or a bare metric.
  const selectors = [...text.matchAll(/\b((?:kafka|jvm)_[A-Za-z0-9_]*[A-Z][A-Za-z0-9_]*|jvm_memory_bytes_used)(\{[^}]*\})?/g)];
  expect(selectors.length).toBeGreaterThanOrEqual(12);
  for (const [, metric, labels] of selectors) {
    const name = /name="([^"]+)"/.exec(labels ?? '')?.[1] ?? '';
    expect(`${metric};${name}`).toMatch(keep);
  }
  // And it drops what nothing reads.
  expect('kafka_network_RequestMetrics_Mean;TotalTimeMs').not.toMatch(keep);
  expect('kafka_server_BrokerTopicMetrics_OneMinuteRate;MessagesInPerSec').not.toMatch(keep);
  const cfg = collectorConfig(s);
  const kafka = cfg.receivers.prometheus.config.scrape_configs.find((j: any) => j.job_name === 'kafka');
  expect(kafka.metric_relabel_configs).toEqual([{ source_labels: ['__name__', 'name'], separator: ';', regex: MSK_KEEP, action: 'keep' }]);
});
