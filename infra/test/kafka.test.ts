// The MSK cluster as the spec and the platform need it: 3 × kafka.m5.large in private subnets,
// SASL/SCRAM over TLS only, encrypted at rest with a customer-managed key, open monitoring on.
import { Match } from 'aws-cdk-lib/assertions';
import { logicalId, resourcesOf, synth, Synth } from './synth';

let s: Synth;
beforeAll(() => {
  s = synth();
});

test('three kafka.m5.large brokers, no public access', () => {
  s.template.resourceCountIs('AWS::MSK::Cluster', 1);
  s.template.hasResourceProperties('AWS::MSK::Cluster', {
    NumberOfBrokerNodes: 3,
    BrokerNodeGroupInfo: Match.objectLike({
      InstanceType: 'kafka.m5.large',
      ConnectivityInfo: { PublicAccess: { Type: 'DISABLED' } },
    }),
  });
});

test('brokers sit in the three isolated subnets, which have no route out', () => {
  const [, cluster] = resourcesOf(s, 'AWS::MSK::Cluster')[0];
  const subnets = cluster.Properties!.BrokerNodeGroupInfo.ClientSubnets as { Ref: string }[];
  expect(subnets).toHaveLength(3);
  for (const subnet of subnets) expect(subnet.Ref).toMatch(/^NetworkVpckafkaSubnet\d/);
  // Isolated: no route of the kafka route tables leads to an internet or NAT gateway.
  for (const [, route] of resourcesOf(s, 'AWS::EC2::Route')) {
    expect(JSON.stringify(route.Properties!.RouteTableId)).not.toMatch(/kafkaSubnet/);
  }
});

test('clients authenticate with SASL/SCRAM only, over TLS only', () => {
  s.template.hasResourceProperties('AWS::MSK::Cluster', {
    ClientAuthentication: {
      Sasl: { Scram: { Enabled: true }, Iam: { Enabled: false } },
      Unauthenticated: { Enabled: false },
    },
    EncryptionInfo: Match.objectLike({
      EncryptionInTransit: { ClientBroker: 'TLS', InCluster: true },
    }),
  });
});

test('data at rest is encrypted with a rotating customer-managed key', () => {
  const key = logicalId(s, 'AWS::KMS::Key', 'KafkaKey');
  s.template.hasResourceProperties('AWS::MSK::Cluster', {
    EncryptionInfo: Match.objectLike({
      EncryptionAtRest: { DataVolumeKMSKeyId: { 'Fn::GetAtt': [key, 'Arn'] } },
    }),
  });
  s.template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
});

test('open monitoring (JMX exporter, node exporter) and broker logs are on', () => {
  s.template.hasResourceProperties('AWS::MSK::Cluster', {
    OpenMonitoring: { Prometheus: { JmxExporter: { EnabledInBroker: true }, NodeExporter: { EnabledInBroker: true } } },
    LoggingInfo: { BrokerLogs: { CloudWatchLogs: Match.objectLike({ Enabled: true }) } },
  });
});

test('broker settings: no auto-created topics, RF 3, two in-sync replicas', () => {
  s.template.hasResourceProperties('AWS::MSK::Configuration', {
    ServerProperties: Match.stringLikeRegexp('auto\\.create\\.topics\\.enable=false'),
  });
  const [, config] = resourcesOf(s, 'AWS::MSK::Configuration')[0];
  const props = config.Properties!.ServerProperties as string;
  expect(props).toContain('default.replication.factor=3');
  expect(props).toContain('min.insync.replicas=2');
  expect(props).toContain('unclean.leader.election.enable=false');
});

test('committed offsets outlive the longest supported stop: longer than the log retention', () => {
  const [, config] = resourcesOf(s, 'AWS::MSK::Configuration')[0];
  const props = config.Properties!.ServerProperties as string;
  const minutes = Number(/^offsets\.retention\.minutes=(\d+)$/m.exec(props)?.[1]);
  const logHours = Number(/^log\.retention\.hours=(\d+)$/m.exec(props)?.[1]);
  expect(logHours).toBe(168);
  expect(minutes).toBeGreaterThanOrEqual(2 * logHours * 60);
});

test('SCRAM users: AmazonMSK_ secrets under the customer-managed key, associated with the cluster', () => {
  const key = logicalId(s, 'AWS::KMS::Key', 'KafkaKey');
  const scram = resourcesOf(s, 'AWS::SecretsManager::Secret').filter(([, r]) =>
    String(r.Properties!.Name).startsWith('AmazonMSK_'),
  );
  expect(scram.map(([, r]) => r.Properties!.Name).sort()).toEqual(['AmazonMSK_tributary-apps', 'AmazonMSK_tributary-connect']);
  for (const [, secret] of scram) {
    expect(secret.Properties!.KmsKeyId).toEqual({ 'Fn::GetAtt': [key, 'Arn'] });
    expect(secret.Properties!.GenerateSecretString.GenerateStringKey).toBe('password');
  }
  s.template.hasResourceProperties('AWS::MSK::BatchScramSecret', {
    SecretArnList: Match.arrayWith(scram.map(([id]) => ({ Ref: id }))),
  });
});

test('the bootstrap lookup waits for the SCRAM association, so no task starts before its user exists', () => {
  const association = logicalId(s, 'AWS::MSK::BatchScramSecret', 'KafkaScramUsers');
  const [, lookup] = resourcesOf(s, 'Custom::AWS')[0];
  expect(lookup.DependsOn).toEqual(expect.arrayContaining([association]));
  expect(JSON.stringify(lookup.Properties!.Update)).toContain('getBootstrapBrokers');
});

test('broker storage grows by itself, up to the configured maximum', () => {
  s.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
    ServiceNamespace: 'kafka',
    ScalableDimension: 'kafka:broker-storage:VolumeSize',
    MaxCapacity: 4000,
  });
});

test('the cluster and its key survive a stack deletion', () => {
  s.template.hasResource('AWS::MSK::Cluster', { DeletionPolicy: 'Retain' });
  s.template.hasResource('AWS::KMS::Key', { DeletionPolicy: 'Retain' });
});

test('sizes come from context', () => {
  const big = synth({ brokerCount: '6', brokerInstanceType: 'kafka.m7g.xlarge', brokerVolumeGiB: '2000' });
  big.template.hasResourceProperties('AWS::MSK::Cluster', {
    NumberOfBrokerNodes: 6,
    BrokerNodeGroupInfo: Match.objectLike({
      InstanceType: 'kafka.m7g.xlarge',
      StorageInfo: { EBSStorageInfo: { VolumeSize: 2000 } },
    }),
  });
});
