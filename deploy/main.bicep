// openface-blob-service on Azure Container Apps.
//
// Deploys, into one resource group:
//   - a user-assigned managed identity: the only credential the apps use
//     (storage accepts no account keys), with Storage Blob/Queue Data
//     Contributor on the storage account and AcrPull on the registry;
//   - the storage account, its job queue (+ poison queue) and job-records container;
//   - a Container Apps environment with Log Analytics;
//   - the web app (external ingress, /healthz liveness, /readyz readiness);
//   - the worker app (no ingress, scaled 0..N by KEDA's azure-queue scaler on the job queue).
// Both apps run the same image: `bin/web` and `bin/worker`.
//
// az deployment group create -g <rg> -f deploy/main.bicep \
//   -p acrName=<registry> image=<registry>.azurecr.io/openface-blob-service:<tag> apiKeys=<key1,key2>
// See deploy/README.md and docs/operations.md.

targetScope = 'resourceGroup'

@description('Region of every resource.')
param location string = resourceGroup().location

@description('Prefix of resource names (lower-case letters and digits).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'openface'

@description('Existing Azure Container Registry (same resource group) that holds the image.')
param acrName string

@description('Full image reference of the service image, e.g. myacr.azurecr.io/openface-blob-service:1.0.0.')
param image string

@description('Comma-separated API keys accepted by the web app (stored as a Container Apps secret).')
@secure()
param apiKeys string

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param storageAccountName string = '${namePrefix}${uniqueString(resourceGroup().id)}'

@description('Job queue: the web app enqueues, the worker dequeues, KEDA scales on its length.')
param jobQueueName string = 'openface-jobs'

@description('Container of job records (JOB_RECORDS_CONTAINER).')
param jobRecordsContainerName string = 'openface-jobs'

@description('Queued jobs per worker replica. A replica batches up to BATCH_MAX_MESSAGES (32) jobs over its cores, so a new one pays only for a longer queue.')
@minValue(1)
param jobsPerWorker int = 16

@description('Upper bound of worker replicas.')
@minValue(1)
param workerMaxReplicas int = 10

@description('Seconds a worker may spend finishing its job after SIGTERM (WORKER_SHUTDOWN_GRACE_SECONDS); the job is handed back after that.')
param workerShutdownGraceSeconds int = 240

@description('Seconds Container Apps waits after SIGTERM before SIGKILL. Must exceed workerShutdownGraceSeconds.')
param workerTerminationGracePeriodSeconds int = 300

@description('vCPU and memory of a worker replica (OpenFace is CPU-bound).')
param workerCpu string = '2.0'
param workerMemory string = '4Gi'

@description('LOG_LEVEL of both apps.')
param logLevel string = 'INFO'

var roleIds = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
}
var storageRoles = [
  roleIds.storageBlobDataContributor
  roleIds.storageQueueDataContributor
]
var webPort = 8000

// ---------------------------------------------------------------- identity

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-id'
  location: location
}

// ---------------------------------------------------------------- storage

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // Microsoft Entra ID (the managed identity) only: no keys, no SAS.
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource jobRecordsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: jobRecordsContainerName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource jobQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: jobQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${jobQueueName}-poison'
}

resource storageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageRoles: {
    name: guid(storage.id, identity.id, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// ---------------------------------------------------------------- registry

resource acr 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: acrName
}

resource acrPullAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acr.id, identity.id, roleIds.acrPull)
  scope: acr
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- environment

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource environment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: '${namePrefix}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

// Settings both apps share (names are fields of analysis.config.Settings, plus
// AZURE_CLIENT_ID, which DefaultAzureCredential reads to pick the user-assigned identity).
var commonEnv = [
  {
    name: 'AZURE_STORAGE_ACCOUNT_URL'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    name: 'JOB_QUEUE_NAME'
    value: jobQueueName
  }
  {
    name: 'JOB_RECORDS_CONTAINER'
    value: jobRecordsContainerName
  }
  {
    name: 'LOG_LEVEL'
    value: logLevel
  }
]

// ---------------------------------------------------------------- web app

resource web 'Microsoft.App/containerApps@2025-01-01' = {
  name: '${namePrefix}-web'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: webPort
        transport: 'auto'
        allowInsecure: false
      }
      registries: [
        {
          server: acr.properties.loginServer
          identity: identity.id
        }
      ]
      secrets: [
        {
          name: 'api-keys'
          value: apiKeys
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'web'
          image: image
          command: [
            'bin/web'
          ]
          env: concat(commonEnv, [
            {
              name: 'API_KEYS'
              secretRef: 'api-keys'
            }
            {
              name: 'PORT'
              value: string(webPort)
            }
          ])
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          probes: [
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: webPort
              }
              initialDelaySeconds: 5
              periodSeconds: 10
              timeoutSeconds: 3
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: webPort
              }
              initialDelaySeconds: 5
              periodSeconds: 10
              timeoutSeconds: 5
              failureThreshold: 3
            }
          ]
        }
      ]
      // gunicorn's graceful_timeout is 20 s.
      terminationGracePeriodSeconds: 30
      scale: {
        minReplicas: 1
        maxReplicas: 5
        rules: [
          {
            name: 'http'
            http: {
              metadata: {
                concurrentRequests: '50'
              }
            }
          }
        ]
      }
    }
  }
  dependsOn: [
    storageRoleAssignments
    acrPullAssignment
  ]
}

// ---------------------------------------------------------------- worker app

resource worker 'Microsoft.App/containerApps@2025-01-01' = {
  name: '${namePrefix}-worker'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      // No ingress: the worker only talks to storage.
      registries: [
        {
          server: acr.properties.loginServer
          identity: identity.id
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'worker'
          image: image
          command: [
            'bin/worker'
          ]
          env: concat(commonEnv, [
            {
              name: 'WORKER_SHUTDOWN_GRACE_SECONDS'
              value: string(workerShutdownGraceSeconds)
            }
          ])
          resources: {
            cpu: json(workerCpu)
            memory: workerMemory
          }
        }
      ]
      // SIGTERM (scale-in, new revision) -> the job finishes or is handed back -> exit.
      terminationGracePeriodSeconds: workerTerminationGracePeriodSeconds
      scale: {
        minReplicas: 0
        maxReplicas: workerMaxReplicas
        rules: [
          {
            // KEDA's azure-queue scaler. Its default strategy ("all") counts
            // in-flight (invisible) messages too, so replicas busy with a job
            // are not scaled in just because nothing is waiting.
            name: 'job-queue'
            azureQueue: {
              accountName: storage.name
              queueName: jobQueueName
              queueLength: jobsPerWorker
              identity: identity.id
            }
          }
        ]
      }
    }
  }
  dependsOn: [
    storageRoleAssignments
    acrPullAssignment
    jobQueue
    poisonQueue
    jobRecordsContainer
  ]
}

output webUrl string = 'https://${web.properties.configuration.ingress.fqdn}'
output storageAccountName string = storage.name
output identityClientId string = identity.properties.clientId
output workerAppName string = worker.name
