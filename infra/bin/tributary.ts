#!/usr/bin/env node
// The CDK app: two stacks, deployed in this order (docs/aws.md):
//
//   <Name>Images   the ECR repositories the images are pushed to
//   <Name>         the platform: VPC, MSK, ECS services, ALB, S3, alarms
//
// Parameters are context keys (lib/config.ts). Synth needs no AWS access: nothing is looked up
// in the account.
import { App } from 'aws-cdk-lib';
import { buildApp } from '../lib/tributary-stack';

buildApp(new App());
