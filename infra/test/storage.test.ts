// S3 and the registries: encrypted, versioned, private, TLS-only, with lifecycles.
import { Match } from 'aws-cdk-lib/assertions';
import { logicalId, resourcesOf, synth, Synth } from './synth';

let s: Synth;
beforeAll(() => {
  s = synth();
});

test('both buckets are encrypted, versioned, private and kept on stack deletion', () => {
  const buckets = resourcesOf(s, 'AWS::S3::Bucket');
  expect(buckets).toHaveLength(2);
  for (const [id, b] of buckets) {
    const p = b.Properties!;
    expect(`${id}: ${p.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm}`).toMatch(/: (aws:kms|AES256)$/);
    expect(p.VersioningConfiguration).toEqual({ Status: 'Enabled' });
    expect(p.PublicAccessBlockConfiguration).toEqual({
      BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true,
    });
    expect(b.DeletionPolicy).toBe('Retain');
  }
});

test('the archive uses the customer-managed key; the access-log bucket SSE-S3 (all ALB logs accept)', () => {
  const key = logicalId(s, 'AWS::KMS::Key', 'StoragePlatformKey');
  s.template.hasResourceProperties('AWS::S3::Bucket', {
    BucketEncryption: { ServerSideEncryptionConfiguration: [{
      BucketKeyEnabled: true,
      ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: { 'Fn::GetAtt': [key, 'Arn'] } },
    }] },
  });
  s.template.hasResourceProperties('AWS::S3::Bucket', {
    BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
  });
});

test('every bucket policy refuses requests without TLS, and TLS below 1.2', () => {
  const policies = resourcesOf(s, 'AWS::S3::BucketPolicy');
  expect(policies).toHaveLength(2);
  for (const [, p] of policies) {
    const statements = p.Properties!.PolicyDocument.Statement as any[];
    expect(statements).toEqual(expect.arrayContaining([
      expect.objectContaining({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
      expect.objectContaining({ Effect: 'Deny', Condition: { NumericLessThan: { 's3:TlsVersion': 1.2 } } }),
    ]));
  }
});

test('the archive moves to Glacier, then expires; access logs expire', () => {
  s.template.hasResourceProperties('AWS::S3::Bucket', {
    LifecycleConfiguration: { Rules: [Match.objectLike({
      Status: 'Enabled',
      Transitions: [{ StorageClass: 'GLACIER', TransitionInDays: 30 }],
      ExpirationInDays: 365,
      NoncurrentVersionExpiration: { NoncurrentDays: 30 },
    })] },
  });
  s.template.hasResourceProperties('AWS::S3::Bucket', {
    LifecycleConfiguration: { Rules: [Match.objectLike({ ExpirationInDays: 90 })] },
  });
  const custom = synth({ archiveGlacierDays: '7', archiveExpireDays: '3650' });
  custom.template.hasResourceProperties('AWS::S3::Bucket', {
    LifecycleConfiguration: { Rules: [Match.objectLike({ Transitions: [{ StorageClass: 'GLACIER', TransitionInDays: 7 }], ExpirationInDays: 3650 })] },
  });
});

test('the archive logs its accesses to the access-log bucket', () => {
  const logs = logicalId(s, 'AWS::S3::Bucket', 'StorageAccessLogBucket');
  s.template.hasResourceProperties('AWS::S3::Bucket', {
    LoggingConfiguration: { DestinationBucketName: { Ref: logs }, LogFilePrefix: 's3/archive/' },
  });
});

test('only Kafka Connect may write the archive', () => {
  const bucket = logicalId(s, 'AWS::S3::Bucket', 'StorageArchiveBucket');
  const writers = resourcesOf(s, 'AWS::IAM::Policy').filter(([, p]) =>
    JSON.stringify(p.Properties!.PolicyDocument).includes(bucket) && JSON.stringify(p.Properties!.PolicyDocument).includes('s3:PutObject'),
  );
  expect(writers).toHaveLength(1);
  expect(JSON.stringify(writers[0][1].Properties!.Roles)).toMatch(/ServicesConnectTaskTaskRole/);
});

test('image registries: immutable tags, scan on push, KMS, kept on deletion', () => {
  s.images.resourceCountIs('AWS::ECR::Repository', 2);
  for (const name of ['tributary', 'tributary-connect']) {
    s.images.hasResource('AWS::ECR::Repository', {
      DeletionPolicy: 'Retain',
      Properties: Match.objectLike({
        RepositoryName: name,
        ImageTagMutability: 'IMMUTABLE',
        ImageScanningConfiguration: { ScanOnPush: true },
        EncryptionConfiguration: { EncryptionType: 'KMS' },
      }),
    });
  }
});
