// CloudWatch alarms for the spec's key alerts, where CloudWatch has the metric, all sent to one
// encrypted SNS topic. The Prometheus rules of deploy/monitoring stay the complete set (DLQ
// growth, stalled windows, processor restarts ...): Amazon Managed Service for Prometheus
// evaluates them on what the collector scrapes and sends its alerts to the same topic
// (observability.ts, docs/aws.md#metrics-in-the-vpc-prometheus-rules-and-dashboards).
//
//   spec alert                      CloudWatch alarm here
//   consumer lag > 100,000          MSK SumOffsetLag per consumer group and topic > 100,000 for 5 min
//   API error rate > 1 %            ALB (target + ELB) 5xx / requests > 1 % for 5 min
//   Kafka broker down               a broker that stops reporting metrics (3 min); no active
//                                   controller; offline partitions; under-replicated partitions
//   DLQ message count increasing    not here: per-topic MSK metrics cost extra (PER_TOPIC_PER_BROKER);
//                                   Prometheus rule TributaryDeadLettersIncreasing on AMP
//   (component down)                ECS running tasks below the desired count for 5 min; no
//                                   healthy gateway behind the ALB
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import { TributaryConfig } from './config';

/** The spec's threshold: "Consumer lag > 100,000 messages". */
export const CONSUMER_LAG_THRESHOLD = 100_000;
/** The spec's threshold: "API error rate > 1%". */
export const API_ERROR_PERCENT = 1;

export interface WatchedGroup {
  /** Kafka consumer group id, as MSK reports it in the `Consumer Group` dimension. */
  readonly group: string;
  readonly topics: string[];
}

export interface WatchedService {
  readonly service: ecs.FargateService;
  readonly minRunning: number;
}

export interface MonitoringProps {
  readonly config: TributaryConfig;
  readonly key: kms.IKey;
  readonly clusterName: string;
  readonly ecsClusterName: string;
  readonly alb: elbv2.ApplicationLoadBalancer;
  readonly targetGroup: elbv2.ApplicationTargetGroup;
  readonly services: WatchedService[];
  readonly consumerGroups: WatchedGroup[];
}

export class Monitoring extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];
  private readonly prefix: string;
  private readonly ecsClusterName: string;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const cfg = props.config;
    this.prefix = cfg.name;
    this.ecsClusterName = props.ecsClusterName;

    this.topic = new sns.Topic(this, 'Alarms', {
      topicName: `${cfg.name}-alarms`,
      displayName: 'Tributary alarms',
      masterKey: props.key,
      enforceSSL: true,
    });
    if (cfg.alarmEmail) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(cfg.alarmEmail));
    }

    const kafka = (metricName: string, dimensionsMap: Record<string, string>, statistic: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/Kafka',
        metricName,
        dimensionsMap: { 'Cluster Name': props.clusterName, ...dimensionsMap },
        statistic,
        period: Duration.minutes(1),
      });
    const brokers = Array.from({ length: cfg.brokerCount }, (_, i) => String(i + 1));

    // --- Kafka broker and cluster health ----------------------------------------------------
    this.alarm('KafkaNoActiveController', {
      alarmDescription: 'No MSK broker is the active controller: metadata changes and leader elections stop (runbook: KafkaBrokerDown)',
      metric: kafka('ActiveControllerCount', {}, 'Sum'),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: 3,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    this.alarm('KafkaOfflinePartitions', {
      alarmDescription: 'Partitions without a leader: their writes and reads fail (runbook: KafkaOfflinePartitions)',
      metric: kafka('OfflinePartitionsCount', {}, 'Maximum'),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 2,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const urp: Record<string, cloudwatch.IMetric> = {};
    brokers.forEach((b) => (urp[`b${b}`] = kafka('UnderReplicatedPartitions', { 'Broker ID': b }, 'Maximum')));
    this.alarm('KafkaUnderReplicatedPartitions', {
      alarmDescription: 'Replicas out of sync for 5 minutes: one more failure can stop writes (runbook: KafkaUnderReplicatedPartitions)',
      metric: new cloudwatch.MathExpression({
        expression: `SUM([${Object.keys(urp).join(',')}])`,
        usingMetrics: urp,
        label: 'under-replicated partitions, all brokers',
        period: Duration.minutes(1),
      }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 5,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    for (const b of brokers) {
      // Every running broker reports CpuIdle each minute; a broker that is down reports nothing.
      this.alarm(`KafkaBroker${b}Down`, {
        alarmDescription: `MSK broker ${b} reported no metrics for 3 minutes (runbook: KafkaBrokerDown)`,
        metric: kafka('CpuIdle', { 'Broker ID': b }, 'SampleCount'),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: 3,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
      this.alarm(`KafkaBroker${b}DiskFull`, {
        alarmDescription: `MSK broker ${b} data disk above 85 % (storage autoscaling starts at 70 %)`,
        metric: kafka('KafkaDataLogsDiskUsed', { 'Broker ID': b }, 'Maximum'),
        threshold: 85,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 5,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    }

    // --- Consumer lag: MSK reports it per group and topic (DEFAULT monitoring level) --------
    for (const { group, topics } of props.consumerGroups) {
      for (const topic of topics) {
        this.alarm(`ConsumerLag-${group}-${topic}`, {
          alarmDescription: `Consumer group ${group} is more than ${CONSUMER_LAG_THRESHOLD} records behind on ${topic} for 5 minutes (runbook: TributaryConsumerLagHigh)`,
          metric: kafka('SumOffsetLag', { 'Consumer Group': group, Topic: topic }, 'Maximum'),
          threshold: CONSUMER_LAG_THRESHOLD,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          evaluationPeriods: 5,
          // MSK publishes lag only while the group is stable or empty: no data is no verdict.
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        });
      }
    }

    // --- API error rate at the ALB ------------------------------------------------------------
    const albMetric = (metricName: string, statistic = 'Sum') =>
      new cloudwatch.Metric({
        namespace: 'AWS/ApplicationELB',
        metricName,
        dimensionsMap: { LoadBalancer: props.alb.loadBalancerFullName },
        statistic,
        period: Duration.minutes(1),
      });
    this.alarm('ApiErrorRate', {
      alarmDescription: `More than ${API_ERROR_PERCENT} % of API requests answered 5xx for 5 minutes (runbook: TributaryApiErrorRateHigh)`,
      metric: new cloudwatch.MathExpression({
        expression: '100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests',
        usingMetrics: {
          target5xx: albMetric('HTTPCode_Target_5XX_Count'),
          elb5xx: albMetric('HTTPCode_ELB_5XX_Count'),
          requests: albMetric('RequestCount'),
        },
        label: 'API 5xx %',
        period: Duration.minutes(1),
      }),
      threshold: API_ERROR_PERCENT,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 5,
      // No requests, no ratio: silence is not an error rate.
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.alarm('ApiNoHealthyGateway', {
      alarmDescription: 'No gateway task passes /api/v1/health/live behind the ALB for 2 minutes: every gateway is hung or gone (runbook: TributaryComponentDown)',
      metric: new cloudwatch.Metric({
        namespace: 'AWS/ApplicationELB',
        metricName: 'HealthyHostCount',
        dimensionsMap: {
          LoadBalancer: props.alb.loadBalancerFullName,
          TargetGroup: props.targetGroup.targetGroupFullName,
        },
        statistic: 'Minimum',
        period: Duration.minutes(1),
      }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: 2,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });

    // --- ECS services: fewer running tasks than they should have ----------------------------
    for (const { service, minRunning } of props.services) this.watchService(service, minRunning);
  }

  /** Alarms when an ECS service runs fewer than `minRunning` tasks for 5 minutes. */
  watchService(service: ecs.FargateService, minRunning: number): void {
    this.alarm(`RunningTasks-${service.node.id}`, {
      alarmDescription: `ECS service ${service.serviceName} ran fewer than ${minRunning} task(s) for 5 minutes (runbook: TributaryComponentDown)`,
      metric: new cloudwatch.Metric({
        namespace: 'ECS/ContainerInsights',
        metricName: 'RunningTaskCount',
        dimensionsMap: { ClusterName: this.ecsClusterName, ServiceName: service.serviceName },
        statistic: 'Minimum',
        period: Duration.minutes(1),
      }),
      threshold: minRunning,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: 5,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
  }

  private alarm(id: string, props: Omit<cloudwatch.AlarmProps, 'alarmName'>): cloudwatch.Alarm {
    const alarm = new cloudwatch.Alarm(this, id, {
      ...props,
      alarmName: `${this.prefix}-${id}`,
    });
    alarm.addAlarmAction(new actions.SnsAction(this.topic));
    alarm.addOkAction(new actions.SnsAction(this.topic));
    this.alarms.push(alarm);
    return alarm;
  }
}
