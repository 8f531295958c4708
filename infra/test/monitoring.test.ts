// The alarms mirror the spec's key alerts with its thresholds, and all reach the SNS topic.
import { Match } from 'aws-cdk-lib/assertions';
import { PROCESSOR_SOURCES, snowflakeSinkGroup } from '../lib/tributary-stack';
import { logicalId, resourcesOf, synth, Synth } from './synth';

let s: Synth;
beforeAll(() => {
  s = synth();
});

const alarms = (t: Synth) => resourcesOf(t, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties!);
const named = (t: Synth, suffix: string) => {
  const found = alarms(t).filter((a) => String(a.AlarmName).endsWith(suffix));
  if (found.length !== 1) throw new Error(`expected one alarm named *${suffix}, found ${found.length}`);
  return found[0];
};

test('consumer lag above 100,000 records for 5 minutes, per group and topic', () => {
  const expected = [
    ...PROCESSOR_SOURCES.map((t) => ['tributary-processor', t]),
    ...snowflakeSinkGroup().topics.map((t) => ['connect-tributary-snowflake-sink', t]),
  ];
  expect(expected).toHaveLength(12);
  for (const [group, topic] of expected) {
    const a = named(s, `ConsumerLag-${group}-${topic}`);
    expect(a).toMatchObject({
      Namespace: 'AWS/Kafka',
      MetricName: 'SumOffsetLag',
      Threshold: 100000,
      ComparisonOperator: 'GreaterThanThreshold',
      EvaluationPeriods: 5,
      Period: 60,
    });
    expect(a.Dimensions).toEqual(expect.arrayContaining([
      { Name: 'Cluster Name', Value: 'tributary' },
      { Name: 'Consumer Group', Value: group },
      { Name: 'Topic', Value: topic },
    ]));
  }
});

test('API 5xx above 1 % of requests for 5 minutes, from the ALB', () => {
  const a = named(s, 'ApiErrorRate');
  expect(a.Threshold).toBe(1);
  expect(a.ComparisonOperator).toBe('GreaterThanThreshold');
  expect(a.EvaluationPeriods).toBe(5);
  const expression = a.Metrics.find((m: any) => m.Expression).Expression;
  expect(expression).toBe('100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests');
  const metrics = a.Metrics.filter((m: any) => m.MetricStat).map((m: any) => m.MetricStat.Metric.MetricName).sort();
  expect(metrics).toEqual(['HTTPCode_ELB_5XX_Count', 'HTTPCode_Target_5XX_Count', 'RequestCount']);
});

test('Kafka broker down: no active controller, offline partitions, silent brokers', () => {
  expect(named(s, 'KafkaNoActiveController')).toMatchObject({
    MetricName: 'ActiveControllerCount', Statistic: 'Sum', Threshold: 1, ComparisonOperator: 'LessThanThreshold', TreatMissingData: 'breaching',
  });
  expect(named(s, 'KafkaOfflinePartitions')).toMatchObject({
    MetricName: 'OfflinePartitionsCount', Threshold: 0, ComparisonOperator: 'GreaterThanThreshold',
  });
  for (const broker of ['1', '2', '3']) {
    const a = named(s, `KafkaBroker${broker}Down`);
    expect(a).toMatchObject({ MetricName: 'CpuIdle', Statistic: 'SampleCount', TreatMissingData: 'breaching' });
    expect(a.Dimensions).toEqual(expect.arrayContaining([{ Name: 'Broker ID', Value: broker }]));
  }
  expect(named(s, 'KafkaUnderReplicatedPartitions').Metrics[0].Expression).toBe('SUM([b1,b2,b3])');
});

test('every ECS service alarms when it runs fewer tasks than it should', () => {
  const running = alarms(s).filter((a) => a.MetricName === 'RunningTaskCount');
  expect(running).toHaveLength(7); // the six of the platform and the metrics collector
  for (const a of running) {
    expect(a).toMatchObject({ Namespace: 'ECS/ContainerInsights', Statistic: 'Minimum', ComparisonOperator: 'LessThanThreshold' });
  }
  expect(running.map((a) => a.Threshold).sort()).toEqual([1, 1, 1, 1, 2, 2, 2]);
  // RunningTaskCount exists only with Container Insights.
  s.template.hasResourceProperties('AWS::ECS::Cluster', {
    ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }],
  });
});

test('every alarm notifies the encrypted SNS topic, when it fires and when it clears', () => {
  const topic = logicalId(s, 'AWS::SNS::Topic', 'MonitoringAlarms');
  const key = logicalId(s, 'AWS::KMS::Key', 'StoragePlatformKey');
  s.template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: { 'Fn::GetAtt': [key, 'Arn'] } });
  const all = alarms(s);
  expect(all.length).toBe(30);
  for (const a of all) {
    expect(a.AlarmActions).toEqual([{ Ref: topic }]);
    expect(a.OKActions).toEqual([{ Ref: topic }]);
  }
});

test('alarmEmail subscribes an address to the topic', () => {
  const mail = synth({ alarmEmail: 'oncall@example.com' });
  mail.template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'oncall@example.com' });
  s.template.resourceCountIs('AWS::SNS::Subscription', 0);
});

test('the lag alarms follow the connector configuration Connect runs', () => {
  const group = snowflakeSinkGroup();
  expect(group.group).toBe('connect-tributary-snowflake-sink');
  expect(group.topics).toEqual(expect.arrayContaining(['events.clickstream', 'aggregates.transactions.5m']));
  s.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
    AlarmDescription: Match.stringLikeRegexp('connect-tributary-snowflake-sink .* on aggregates\\.iot\\.sensors\\.1m'),
  });
});
