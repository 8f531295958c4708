// The ECS services: what each container runs, the settings and secrets it gets, and that
// those match what the tributary binary and the Connect worker configuration read.
import * as fs from 'fs';
import * as path from 'path';
import { container, containers, envOf, REPO_ROOT, resourcesOf, secretNamesOf, synth, Synth } from './synth';

let s: Synth;
beforeAll(() => {
  s = synth();
});

const SECRETISH = /PASSWORD|PASSPHRASE|PRIVATE_KEY|SECRET|TOKEN|USER_INFO|CREDENTIAL/;

test('no secret is passed as a plain environment variable', () => {
  for (const { family, container: c } of containers(s)) {
    for (const name of Object.keys(envOf(c))) {
      expect(`${family}/${c.Name}/${name}`).not.toMatch(SECRETISH);
    }
    // And no environment value points at a secret (that would be its ARN, not its value).
    expect(JSON.stringify(c.Environment ?? [])).not.toMatch(/Secret|secretsmanager/i);
  }
});

test('credentials arrive as ECS secrets from Secrets Manager', () => {
  const kafkaUser = ['TRIBUTARY_KAFKA__SASL_USERNAME', 'TRIBUTARY_KAFKA__SASL_PASSWORD'];
  expect(secretNamesOf(container(s, 'tributary-gateway', 'gateway'))).toEqual(expect.arrayContaining([
    ...kafkaUser, 'TRIBUTARY_GATEWAY__REGISTRY__USER', 'TRIBUTARY_GATEWAY__REGISTRY__PASSWORD',
  ]));
  expect(secretNamesOf(container(s, 'tributary-registry', 'registry'))).toEqual(expect.arrayContaining([
    ...kafkaUser, 'TRIBUTARY_REGISTRY__AUTH_USER', 'TRIBUTARY_REGISTRY__AUTH_PASSWORD',
  ]));
  expect(secretNamesOf(container(s, 'tributary-processor-0', 'processor'))).toEqual(expect.arrayContaining([
    ...kafkaUser, 'TRIBUTARY_PROCESSOR__REGISTRY__USER', 'TRIBUTARY_PROCESSOR__REGISTRY__PASSWORD',
  ]));
  expect(secretNamesOf(container(s, 'tributary-connect', 'connect'))).toEqual(expect.arrayContaining([
    'CONNECT_SASL_USERNAME', 'CONNECT_SASL_PASSWORD', 'SNOWFLAKE_PRIVATE_KEY', 'SNOWFLAKE_PRIVATE_KEY_PASSPHRASE',
    'SCHEMA_REGISTRY_USER', 'SCHEMA_REGISTRY_PASSWORD',
  ]));
  for (const { container: c } of containers(s)) {
    for (const secret of c.Secrets ?? []) expect(JSON.stringify(secret.ValueFrom)).toMatch(/Ref/);
  }
});

test('Kafka settings are the ones docs/configuration.md documents, for MSK', () => {
  const env = envOf(container(s, 'tributary-gateway', 'gateway'));
  expect(env.TRIBUTARY_KAFKA__SECURITY_PROTOCOL).toBe('sasl_ssl');
  expect(env.TRIBUTARY_KAFKA__SASL_MECHANISM).toBe('SCRAM-SHA-512');
  expect(JSON.stringify(env.TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS)).toContain('BootstrapBrokerStringSaslScram');
  // Every TRIBUTARY_<SECTION>__<KEY> set anywhere is a key the configuration reference lists.
  const doc = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'configuration.md'), 'utf8');
  for (const { container: c } of containers(s)) {
    for (const name of [...Object.keys(envOf(c)), ...secretNamesOf(c)]) {
      // A key of a table inside a section takes one more __: TRIBUTARY_GATEWAY__REGISTRY__URL
      // is `url` of [gateway.registry].
      const m = /^TRIBUTARY_([A-Z]+)__([A-Z_]+?)(?:__([A-Z_]+))?$/.exec(name);
      if (!m) continue;
      const key = (m[3] ?? m[2]).toLowerCase();
      const table = m[3] ? `[${m[1].toLowerCase()}.${m[2].toLowerCase()}]` : '';
      expect(`${name}: ${doc.includes('`' + key + '`') && doc.includes(table)}`).toBe(`${name}: true`);
    }
  }
});

test('services listen on all interfaces inside their task, on their documented ports', () => {
  expect(envOf(container(s, 'tributary-gateway', 'gateway')).TRIBUTARY_GATEWAY__LISTEN).toBe('0.0.0.0:8080');
  expect(envOf(container(s, 'tributary-registry', 'registry')).TRIBUTARY_REGISTRY__LISTEN).toBe('0.0.0.0:8081');
  expect(envOf(container(s, 'tributary-processor-0', 'processor')).TRIBUTARY_PROCESSOR__LISTEN).toBe('0.0.0.0:8082');
  const registryUrl = 'http://registry.tributary.internal:8081';
  expect(envOf(container(s, 'tributary-gateway', 'gateway')).TRIBUTARY_GATEWAY__REGISTRY__URL).toBe(registryUrl);
  expect(envOf(container(s, 'tributary-processor-1', 'processor')).TRIBUTARY_PROCESSOR__REGISTRY__URL).toBe(registryUrl);
  s.template.hasResourceProperties('AWS::ServiceDiscovery::Service', { Name: 'registry' });
});

test('one processor service per instance slot, each with its own --instance, never two at once', () => {
  const slots = [0, 1, 2].map((i) => container(s, `tributary-processor-${i}`, 'processor').Command);
  expect(slots).toEqual([0, 1, 2].map((i) => ['processor', '--instance', String(i)]));
  const processors = resourcesOf(s, 'AWS::ECS::Service').filter(([, r]) => String(r.Properties!.ServiceName).startsWith('processor-'));
  expect(processors).toHaveLength(3);
  for (const [, p] of processors) {
    expect(p.Properties!.DesiredCount).toBe(1);
    expect(p.Properties!.DeploymentConfiguration).toMatchObject({ MinimumHealthyPercent: 0, MaximumPercent: 100 });
  }
  // Slot services depend on each other in order, so CloudFormation rolls one slot at a time.
  const ids = resourcesOf(s, 'AWS::ECS::Service').filter(([, r]) => String(r.Properties!.ServiceName).startsWith('processor-'))
    .sort(([, a], [, b]) => String(a.Properties!.ServiceName).localeCompare(String(b.Properties!.ServiceName)));
  for (let i = 1; i < ids.length; i++) expect(ids[i][1].DependsOn).toEqual(expect.arrayContaining([ids[i - 1][0]]));
  const five = synth({ processorInstances: '5' });
  expect(containers(five).filter((c) => c.container.Name === 'processor')).toHaveLength(5);
});

test('the catalog topics are created before the gateway and the processor start, and on demand', () => {
  for (const family of ['tributary-gateway', 'tributary-processor-0']) {
    const topics = container(s, family, 'topics');
    expect(topics.Command).toEqual(['topics', 'apply', '--replication-factor', '3']);
    expect(topics.Essential).toBe(false);
  }
  expect(container(s, 'tributary-gateway', 'gateway').DependsOn).toEqual([{ ContainerName: 'topics', Condition: 'SUCCESS' }]);
  // The one-off task definition of docs/aws.md (aws ecs run-task).
  const oneOff = container(s, 'tributary-topics', 'topics');
  expect(oneOff.Command).toEqual(['topics', 'apply', '--replication-factor', '3']);
  expect(oneOff.Essential).toBe(true);
  expect(envOf(container(s, 'tributary-registry', 'registry')).TRIBUTARY_REGISTRY__REPLICATION_FACTOR).toBe('3');
});

test('registry and processor have container health checks on their own endpoints', () => {
  expect(container(s, 'tributary-registry', 'registry').HealthCheck!.Command.join(' ')).toContain('GET /subjects');
  // Liveness, not readiness: a processor waiting for Kafka between rebuilds is not replaced.
  expect(container(s, 'tributary-processor-0', 'processor').HealthCheck!.Command.join(' ')).toContain('GET /health/live HTTP/1.0');
});

test('Connect gets every variable its worker and connector configurations read', () => {
  const c = container(s, 'tributary-connect', 'connect');
  const provided = new Set([...Object.keys(envOf(c)), ...secretNamesOf(c)]);
  const script = (c.Command ?? []).join('\n');
  for (const file of ['connect-distributed.properties', 'snowflake-sink.json']) {
    const text = fs.readFileSync(path.join(REPO_ROOT, 'deploy', 'connect', file), 'utf8')
      .split('\n').filter((line) => !line.trimStart().startsWith('#')).join('\n');
    for (const [, name] of text.matchAll(/\$\{env:([A-Z0-9_]+)\}/g)) {
      const set = provided.has(name) || script.includes(`export ${name}=`);
      expect(`${file}: ${name} ${set ? 'set' : 'missing'}`).toBe(`${file}: ${name} set`);
    }
  }
  expect(script).toContain('org.apache.kafka.connect.cli.ConnectDistributed /opt/tributary/connect-distributed.properties');
  expect(JSON.stringify(envOf(c).CONNECT_BOOTSTRAP_SERVERS)).toContain('BootstrapBrokerStringSaslScram');
  s.template.hasResourceProperties('AWS::ServiceDiscovery::Service', { Name: 'connect' });
});

test('the connector is registered by a one-off task that holds no secret', () => {
  const register = container(s, 'tributary-connect-register', 'register');
  expect(register.EntryPoint).toEqual(['/opt/tributary/register.sh']);
  expect(register.Command).toEqual(['/opt/tributary/snowflake-sink.json']);
  expect(envOf(register).CONNECT_URL).toBe('http://connect.tributary.internal:8083');
  expect(register.Secrets ?? []).toEqual([]);
  const outputs = s.template.toJSON().Outputs as Record<string, { Value: unknown }>;
  expect(JSON.stringify(outputs.RegisterConnector.Value)).toContain('--task-definition tributary-connect-register');
  expect(JSON.stringify(outputs.RunTopicsApply.Value)).toContain('--task-definition tributary-topics');
});

test('containers have read-only root file systems and log to CloudWatch', () => {
  for (const { family, container: c } of containers(s)) {
    expect(`${family}/${c.Name}: ${c.ReadonlyRootFilesystem}`).toBe(`${family}/${c.Name}: true`);
    expect(c.LogConfiguration!.LogDriver).toBe('awslogs');
  }
});

test('every log group has a retention and a customer-managed key', () => {
  const groups = resourcesOf(s, 'AWS::Logs::LogGroup');
  expect(groups.length).toBeGreaterThanOrEqual(8);
  for (const [id, g] of groups) {
    expect(`${id}: ${g.Properties!.RetentionInDays}`).toBe(`${id}: 30`);
    expect(g.Properties!.KmsKeyId).toBeDefined();
  }
  const names = groups.map(([, g]) => g.Properties!.LogGroupName).filter((n) => typeof n === 'string');
  expect(names).toEqual(expect.arrayContaining(['/tributary/gateway', '/tributary/registry', '/tributary/processor', '/tributary/connect', '/tributary/topics', '/tributary/msk/brokers']));
  const longer = synth({ logRetentionDays: '90' });
  for (const [, g] of resourcesOf(longer, 'AWS::Logs::LogGroup')) expect(g.Properties!.RetentionInDays).toBe(90);
});

test('sizes and counts come from context', () => {
  const sized = synth({ gatewayCount: '4', gatewayMaxCount: '10', connectCpu: '4096', connectMemoryMiB: '8192' });
  sized.template.hasResourceProperties('AWS::ECS::Service', { ServiceName: 'gateway', DesiredCount: 4 });
  sized.template.hasResourceProperties('AWS::ECS::TaskDefinition', { Family: 'tributary-connect', Cpu: '4096', Memory: '8192' });
  sized.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 4, MaxCapacity: 10 });
});

test('the same context gives the same templates (deterministic synth)', () => {
  expect(synth().json).toEqual(s.json);
});
