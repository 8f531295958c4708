// Storage: the platform's customer-managed KMS key (logs, alarms, archive, application secrets)
// and the two S3 buckets, backup/archival and access logs.
//
// Both buckets block every kind of public access, are versioned, refuse requests that are not
// TLS (enforceSSL adds an aws:SecureTransport deny to the bucket policy, and minimumTLSVersion
// refuses TLS below 1.2), and are kept when the stack is deleted. The archive is encrypted with
// the platform key; the access-log bucket uses SSE-S3 because Elastic Load Balancing can only
// deliver access logs to buckets encrypted with S3-managed keys.
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { TributaryConfig } from './config';
import { skipChecks } from './checkov';

export interface StorageProps {
  readonly config: TributaryConfig;
}

export class Storage extends Construct {
  /** Encrypts log groups, the alarm topic, the archive bucket and the application secrets. */
  readonly platformKey: kms.Key;
  /** Backup and archival: Kafka topic archives (an S3 sink connector), exports, snapshots. */
  readonly archiveBucket: s3.Bucket;
  /** ALB access logs and the archive bucket's server access logs. */
  readonly accessLogBucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: StorageProps) {
    super(scope, id);
    const cfg = props.config;
    const stack = Stack.of(this);

    this.platformKey = new kms.Key(this, 'PlatformKey', {
      alias: `alias/${cfg.name}/platform`,
      description: `${cfg.name}: CloudWatch Logs, SNS alarms, S3 archive and application secrets`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // CloudWatch Logs encrypts log groups with the key itself, as the service principal, and
    // only for log groups of this account and region.
    this.platformKey.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'CloudWatchLogsOfThisAccount',
      principals: [new iam.ServicePrincipal(`logs.${stack.region}.amazonaws.com`)],
      actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
      resources: ['*'],
      conditions: {
        ArnLike: { 'kms:EncryptionContext:aws:logs:arn': `arn:${stack.partition}:logs:${stack.region}:${stack.account}:*` },
      },
    }));
    // CloudWatch alarms publish to the encrypted SNS topic (monitoring.ts) as this principal.
    this.platformKey.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'CloudWatchAlarmsPublishToEncryptedTopic',
      principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
      actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
      resources: ['*'],
      conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
    }));

    this.accessLogBucket = new s3.Bucket(this, 'AccessLogBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      versioned: true,
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [
        {
          id: 'expire-access-logs',
          expiration: Duration.days(cfg.accessLogExpireDays),
          noncurrentVersionExpiration: Duration.days(7),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
    });
    skipChecks(this.accessLogBucket, {
      CKV_AWS_18: 'this is the access-log bucket; logging it into itself would loop',
    });

    this.archiveBucket = new s3.Bucket(this, 'ArchiveBucket', {
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: this.platformKey,
      // One data key per bucket instead of one KMS request per object: cheaper, same protection.
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      minimumTLSVersion: 1.2,
      versioned: true,
      serverAccessLogsBucket: this.accessLogBucket,
      serverAccessLogsPrefix: 's3/archive/',
      removalPolicy: RemovalPolicy.RETAIN,
      lifecycleRules: [
        {
          id: 'archive-to-glacier-then-expire',
          transitions: [
            { storageClass: s3.StorageClass.GLACIER, transitionAfter: Duration.days(cfg.archiveGlacierDays) },
          ],
          expiration: Duration.days(cfg.archiveExpireDays),
          // Overwritten and deleted objects stay recoverable for a month, then go.
          noncurrentVersionExpiration: Duration.days(30),
          abortIncompleteMultipartUploadAfter: Duration.days(7),
        },
      ],
    });
  }
}
